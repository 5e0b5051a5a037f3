"""The failover chaos run: the pools lose their Redis primary mid-stream, Sentinel promotes a
replica, and every task whose publish returned is run or dead-lettered.

A primary, two replicas and three Sentinels (tests/support/sentinel.py: real redis-servers with
ACL users; failure detection as the redis role deploys it: its ``down-after-milliseconds`` and
``failover-timeout`` defaults, read from roles/redis/defaults/main.yml), the four pools under a
real supervisord on the ``sentinel://`` URL, and a producer publishing planned tasks with
``WORKER_APP_PUBLISH_MIN_REPLICAS=1``: a publish returns only once a replica has the message.
One that raised (the failover refuses publishes for seconds) is published again, as an
application would, so a task may run twice; none that was confirmed may vanish. When
``fail_at`` of the tasks are accounted for, the primary fails:

- ``kill``: its redis-server is SIGKILLed (no shutdown, no last replication); once a replica
  is promoted it is started again and the Sentinels make it a replica of the new primary;
- ``host``: its host stops: Redis gets SIGTERM (what ``docker stop`` sends: Redis hands its
  last writes to the replicas, then exits) and the Sentinel beside it stops too; neither comes
  back during the run.

The audit (tests/chaos/ledger.py) then accounts for every task; the run measures the time from
the failure to the promotion and to the first task body run on the new primary, and checks the
workers rode it out (the same main process per pool: no crash loop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.chaos.fleet import ROOT, Fleet
from tests.chaos.ledger import audit, broker_idle, plan
from tests.chaos.scenario import (
    QUEUE_NAMES,
    ChaosConfig,
    Events,
    _publisher,
    _safe,
    worker_env,
)
from tests.chaos.tasks import RUNS
from tests.support.sentinel import Node, SentinelCluster, start_cluster
from worker_app.dlq.store import DeadLetterStore
from worker_app.dlq.writer import store_for
from worker_app.factory import create_app
from worker_app.settings import Settings
from worker_app.state_redis import state_client

FAILURES = ("kill", "host")
ROLE_DEFAULTS = ROOT / "roles" / "redis" / "defaults" / "main.yml"


def role_detection() -> dict[str, int]:
    """The redis role's Sentinel failure detection (milliseconds): what production runs."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return {
        "down_after_ms": int(defaults["redis_sentinel_down_after_milliseconds"]),
        "failover_timeout_ms": int(defaults["redis_sentinel_failover_timeout"]),
    }


def sentinel_fleet(
    workdir: Path, config: ChaosConfig
) -> tuple[SentinelCluster, dict[str, str], Any, DeadLetterStore, Any, Fleet]:
    """A Sentinel deployment with the role's detection and the four pools (not started) on
    it, every publish waiting for a replica: (cluster, env, app, DLQ store, state client,
    fleet). The caller stops the cluster."""
    cluster = start_cluster(workdir / "sentinel", **role_detection())
    env = {
        **worker_env(cluster.url(0), config),
        **cluster.env(),
        "WORKER_APP_PUBLISH_MIN_REPLICAS": "1",
    }
    settings = Settings.from_env(env)
    app, store, client = create_app(settings), store_for(settings), state_client(settings)
    fleet = Fleet(
        workdir / "fleet", env, dict.fromkeys(QUEUE_NAMES, config.processes), config.loglevel
    )
    return cluster, env, app, store, client, fleet


def main_pids_seen(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[int]]:
    """Each pool's main-process pids in two fleet snapshots (one pid: no restart)."""
    return {name: sorted({snap[name]["pid"] for snap in (before, after)} - {0}) for name in before}


def fleet_problems(result: dict[str, Any]) -> list[str]:
    """What a run under load must never show: a task lost or with an outcome the plan rules
    out, a pool's main process replaced (a crash loop), an 'Unrecoverable error'."""
    problems = []
    audited = result["audit"]
    if audited["lost"] or audited["wrong_outcomes"]:
        problems.append(f"tasks lost or wrong: {audited['lost_tokens'][:10]} "
                        f"{audited['wrong_outcomes'][:10]}")  # fmt: skip
    restarted = {pool: pids for pool, pids in result["main_pids_seen"].items() if len(pids) != 1}
    if restarted:
        problems.append(f"worker main processes changed (crash loop?): {restarted}")
    if result["worker_unrecoverable_errors"]:
        problems.append(f"{result['worker_unrecoverable_errors']} 'Unrecoverable error' crashes")
    return problems


def _fail(cluster: SentinelCluster, how: str) -> Node:
    """Fail the current primary as ``how`` says; return it."""
    old = cluster.primary()
    if how == "kill":
        old.kill()
    elif how == "host":
        # The host's Sentinel goes with it (one per Redis host, as the redis role deploys).
        cluster.sentinels[cluster.data.index(old)].stop()
        old.stop()  # SIGTERM
    else:
        raise ValueError(f"unknown failure {how!r}: one of {FAILURES}")
    cluster.killed.append(old)
    return old


def _body_runs(client: Any) -> int | None:
    runs = _safe(lambda: client.hvals(RUNS), None)
    return None if runs is None else sum(int(n) for n in runs)


def _first_run_after(client: Any, baseline: int | None, timeout: float) -> float | None:
    """Seconds until a task body runs on the new primary (its run counter grows)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        runs = _body_runs(client)
        if runs is not None and baseline is not None and runs > baseline:
            return time.monotonic() - began
        if baseline is None:
            baseline = runs
        time.sleep(0.1)
    return None


def run_failover(
    workdir: Path, config: ChaosConfig, *, how: str = "kill", tasks: int = 2000,
    fail_at: float = 0.3, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Publish ``tasks`` tasks, fail the primary as ``how`` says midway, audit."""
    if how not in FAILURES:
        raise ValueError(f"unknown failure {how!r}: one of {FAILURES}")
    planned = plan(tasks, seed=config.seed + 2, transient=config.transient,
                   permanent=config.permanent, idempotent=config.idempotent,
                   duplicate=0.0, prefix=how[0])  # fmt: skip
    detection = role_detection()
    cluster, _, app, store, client, fleet = sentinel_fleet(workdir, config)
    events = Events()
    published = threading.Event()
    failure: dict[str, Any] = {"how": how, **detection}
    try:
        fleet.start()
        before = fleet.info()
        events.started = time.monotonic()
        log(f"failover ({how}): {tasks} tasks at {config.publish_rate}/s, each publish waits "
            f"for a replica; the primary fails at {fail_at:.0%} accounted")  # fmt: skip
        publisher = threading.Thread(
            target=_publisher,
            args=(app, planned, config.publish_rate, events, published),
            daemon=True,
        )
        publisher.start()
        deadline = time.monotonic() + tasks / config.publish_rate + config.settle_timeout
        current = None
        while time.monotonic() < deadline:
            time.sleep(1)
            current = _safe(lambda: audit(planned, client, store), None)
            if current is None:
                continue
            if "failed_at_s" not in failure and current.accounted >= fail_at * tasks:
                failure["accounted_before"] = current.accounted
                failure["failed_at_s"] = events.at()
                failed = time.monotonic()
                old = _fail(cluster, how)
                new, _ = cluster.wait_for_promotion(old, timeout=60)
                failure["promotion_s"] = round(time.monotonic() - failed, 2)
                baseline = _body_runs(client)
                first = _first_run_after(client, baseline, timeout=120)
                failure["first_run_on_new_primary_s"] = (
                    None if first is None else round(time.monotonic() - failed, 2)
                )
                log(f"  t={events.at():6.1f}s {old.name} failed ({how}); {new.name} promoted "
                    f"after {failure['promotion_s']} s, first task run on it "
                    f"{failure['first_run_on_new_primary_s']} s after the failure")  # fmt: skip
                if how == "kill":
                    cluster.restart(old)
                    cluster.wait_for_role(old, "slave", timeout=60)
                    failure["old_primary_back_as_replica"] = True
            if (
                published.is_set()
                and current.accounted == tasks
                and _safe(lambda: broker_idle(client), False)
            ):
                break
        final = audit(planned, client, store)
        after = fleet.info()
        logs = "".join(fleet.log(pool) for pool in QUEUE_NAMES)
    finally:
        fleet.stop()
        cluster.stop()
    return {
        "failure": failure,
        "audit": final.as_dict(),
        "publish_retries": events.publish_errors,
        "duration_s": events.at(),
        "main_pids_seen": main_pids_seen(before, after),
        "worker_unrecoverable_errors": logs.count("Unrecoverable error"),
    }
