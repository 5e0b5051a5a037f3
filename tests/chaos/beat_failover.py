"""The Beat chaos run: Beat's active host stops under load; the schedule continues within the
takeover bound and no tick is published twice.

A Sentinel deployment (tests/support/sentinel.py, the redis role's detection settings), the four
pools under a real supervisord on its ``sentinel://`` URL (the environment of the failover run),
a producer publishing planned tasks (the load, audited as in every chaos run), and two Beat
processes, ``celery -A beatchaos beat -S redbeat.RedBeatScheduler``, on the same wiring: RedBeat
keeps its schedule and lock in worker_app's state Redis behind the Sentinels, with worker_app's
defaults (``beat_max_loop_interval`` 5 s, ``redbeat_lock_timeout`` 25 s: takeover bound 30 s,
``worker_app.beat_scheduler.takeover_bound``). A periodic task every ``INTERVAL`` seconds
(``chaos.beat_tick``) records, from the workers, when Beat published each tick and which Beat
sent it.

Midway the active Beat's host is lost: its process group is SIGKILLed (no graceful release of
the lock). The run measures the gap from the kill to the standby's first tick and checks:

- the gap is within the takeover bound (a product guarantee);
- no tick was published twice (two ticks closer than half the interval: the run state lives in
  Redis, saved before each send) and none ran twice;
- the standby goes on ticking (the schedule resumes), and every planned task is accounted for.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.chaos.failover import fleet_problems, main_pids_seen, sentinel_fleet
from tests.chaos.fleet import ROOT
from tests.chaos.ledger import audit, broker_idle, plan
from tests.chaos.scenario import QUEUE_NAMES, ChaosConfig, Events, _publisher, _safe
from tests.chaos.tasks import BEAT_TICK_RUNS, BEAT_TICKS
from tests.integration.test_beat_failover import holds_lock
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, start_worker
from worker_app.beat_scheduler import DEFAULT_MAX_LOOP_INTERVAL, LOCK_TIMEOUT_FACTOR, takeover_bound

INTERVAL = 1.0  # the periodic task's schedule (seconds)
EXPIRES = 3600  # the entry's expires option: the header minus this is the publish time
TICK_QUEUE = "critical"
#: worker_app's defaults, which the Beats run with (nothing set in the app).
CONF = {
    "beat_max_loop_interval": DEFAULT_MAX_LOOP_INTERVAL,
    "redbeat_lock_timeout": LOCK_TIMEOUT_FACTOR * DEFAULT_MAX_LOOP_INTERVAL,
}
BOUND = takeover_bound(CONF)

APP = f"""
from celery import Celery

from worker_app import configure

app = Celery("beatchaos")
app.conf.beat_schedule = {{
    "tick": {{
        "task": "chaos.beat_tick",
        "schedule": {INTERVAL},
        "args": [{EXPIRES}],
        "options": {{"queue": "{TICK_QUEUE}", "expires": {EXPIRES}}},
    }},
}}
configure(app)
"""


def ticks(client: Any) -> list[dict[str, Any]]:
    """Every recorded run of a tick, by publish time."""
    runs = [json.loads(raw) for raw in client.lrange(BEAT_TICKS, 0, -1)]
    return sorted(runs, key=lambda run: run["sent"])


def pid_of(origin: str) -> int:
    """The producer pid of an ``origin`` header (``gen<pid>@<host>``)."""
    return int(origin.split("@", 1)[0].removeprefix("gen"))


def tick_figures(runs: list[dict[str, Any]], runs_by_id: dict[str, int]) -> dict[str, Any]:
    """Duplicates and gaps of the published ticks (one per task id)."""
    published = sorted({run["id"]: run for run in runs}.values(), key=lambda run: run["sent"])
    gaps = [b["sent"] - a["sent"] for a, b in itertools.pairwise(published)]
    return {
        "ticks_published": len(published),
        "ticks_published_twice": sum(1 for gap in gaps if gap < INTERVAL / 2),
        "ticks_run_twice": sum(1 for n in runs_by_id.values() if n > 1),
        "median_gap_s": round(statistics.median(gaps), 3) if gaps else None,
        "max_gap_s": round(max(gaps), 3) if gaps else None,
    }


def run_beat_failover(
    workdir: Path, config: ChaosConfig, *, tasks: int = 2000, kill_after_ticks: int = 5,
    ticks_after: int = 5, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Two Beats under ``tasks`` tasks of load; SIGKILL the active one; measure and audit."""
    planned = plan(tasks, seed=config.seed + 3, transient=config.transient,
                   permanent=config.permanent, idempotent=config.idempotent,
                   duplicate=0.0, prefix="b")  # fmt: skip
    cluster, env, app, store, client, fleet = sentinel_fleet(workdir, config)
    (workdir / "beatchaos.py").write_text(textwrap.dedent(APP))
    beat_env = {
        **env,
        "WORKER_APP_LOG_FORMAT": "text",
        "PYTHONPATH": os.pathsep.join([str(workdir), str(ROOT), *sys.path]),
    }
    beats: list[WorkerProcess] = []

    def start_beat(name: str) -> WorkerProcess:
        args = [
            "celery", "-A", "beatchaos", "beat", "-S", "redbeat.RedBeatScheduler",
            "--loglevel", "INFO", "--pidfile=", "--schedule", str(workdir / f"{name}.db"),
        ]  # fmt: skip
        beat = start_worker(args, beat_env, workdir / f"{name}.log", ready_text="beat: Starting")
        beats.append(beat)
        return beat

    events = Events()
    published = threading.Event()
    result: dict[str, Any] = {"bound_s": BOUND, "interval_s": INTERVAL, **CONF}
    try:
        fleet.start()
        before = fleet.info()
        events.started = time.monotonic()
        log(f"beat failover: two Beats (RedBeat, lock timeout {CONF['redbeat_lock_timeout']} s, "
            f"max interval {CONF['beat_max_loop_interval']} s: bound {BOUND:g} s), a tick every "
            f"{INTERVAL:g} s, {tasks} tasks at {config.publish_rate}/s")  # fmt: skip
        publisher = threading.Thread(
            target=_publisher,
            args=(app, planned, config.publish_rate, events, published),
            daemon=True,
        )
        publisher.start()
        active = start_beat("beat-a")
        wait_until(lambda: holds_lock(active), timeout=60, what="beat-a holds the lock")
        standby = start_beat("beat-b")
        wait_until(
            lambda: len(_safe(lambda: ticks(client), [])) >= kill_after_ticks,
            timeout=60,
            what=f"{kill_after_ticks} ticks run",
        )
        killed_at = time.time()
        result["killed_at_s"] = events.at()
        result["queued_at_kill"] = _safe(lambda: sum(client.llen(q) for q in QUEUE_NAMES), None)
        os.killpg(active.process.pid, signal.SIGKILL)  # the host is gone: no lock release
        active.process.wait()

        def standby_ticks() -> list[dict[str, Any]]:
            found = _safe(lambda: ticks(client), [])
            return [t for t in found if pid_of(t["origin"]) == standby.process.pid]

        first = wait_until(standby_ticks, timeout=BOUND + 60, what="the standby's first tick")
        result["takeover_s"] = round(first[0]["sent"] - killed_at, 2)
        wait_until(
            lambda: len(standby_ticks()) >= ticks_after,
            timeout=ticks_after * INTERVAL + 60,
            what=f"{ticks_after} ticks of the standby",
        )
        result["standby_holds_lock"] = holds_lock(standby)
        log(f"  t={result['killed_at_s']:6.1f}s the active Beat SIGKILLed "
            f"({result['queued_at_kill']} tasks queued); the standby's first tick "
            f"{result['takeover_s']} s later (bound {BOUND:g} s)")  # fmt: skip
        for beat in beats:
            beat.stop()
        deadline = time.monotonic() + tasks / config.publish_rate + config.settle_timeout
        while time.monotonic() < deadline:
            time.sleep(1)
            current = _safe(lambda: audit(planned, client, store), None)
            if (
                current is not None
                and published.is_set()
                and current.accounted == tasks
                and _safe(lambda: broker_idle(client), False)
            ):
                break
        final = audit(planned, client, store)
        runs = ticks(client)
        runs_by_id = {k.decode(): int(v) for k, v in client.hgetall(BEAT_TICK_RUNS).items()}
        after = fleet.info()
        logs = "".join(fleet.log(pool) for pool in QUEUE_NAMES)
    finally:
        for beat in beats:
            if beat.process.poll() is None:
                os.killpg(beat.process.pid, signal.SIGKILL)
                beat.process.wait()
        fleet.stop()
        cluster.stop()
    origins = sorted({pid_of(run["origin"]) for run in runs})
    standby_pid = beats[-1].process.pid
    return {
        "beat": {
            **result,
            **tick_figures(runs, runs_by_id),
            "beat_pids": [beat.process.pid for beat in beats],
            "tick_origins": origins,
            "standby_ticks": sum(1 for run in runs if pid_of(run["origin"]) == standby_pid),
        },
        "audit": final.as_dict(),
        "publish_retries": events.publish_errors,
        "duration_s": events.at(),
        "main_pids_seen": main_pids_seen(before, after),
        "worker_unrecoverable_errors": logs.count("Unrecoverable error"),
    }


def beat_failures(result: dict[str, Any]) -> list[str]:
    """Why a Beat failover run failed its promise (empty: it kept it)."""
    problems = fleet_problems(result)
    beat = result["beat"]
    takeover = beat.get("takeover_s")
    if takeover is None:
        problems.append("the standby never ticked")
    elif takeover > beat["bound_s"]:
        problems.append(f"takeover {takeover} s > the bound {beat['bound_s']} s")
    if beat["ticks_published_twice"]:
        problems.append(f"{beat['ticks_published_twice']} ticks published twice")
    if beat["ticks_run_twice"]:
        problems.append(f"{beat['ticks_run_twice']} ticks run twice")
    if not beat.get("standby_holds_lock"):
        problems.append("the standby does not hold the lock")
    return problems
