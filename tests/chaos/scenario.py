"""The chaos runs: tasks under SIGKILLs and a Redis restart, and a 30 s Redis outage.

Both start a real redis-server (AOF on, as the redis role configures it) and the
four pools under a real supervisord, publish planned tasks from this process
(a producer with a retry policy, as an application server has), break things,
then audit every task (tests/chaos/ledger.py).

The transport's consumer heartbeats bring back the messages a killed worker main
process held (reserved, or waiting for a retry countdown) once its heartbeat is
older than ``WORKER_APP_CONSUMER_GRACE``; the visibility timeout stays at its
production default (one hour) as the backstop. ``tests/chaos/recovery.py``
measures how long those messages waited.
"""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kombu.exceptions import OperationalError

from tests.chaos.fleet import Fleet
from tests.chaos.ledger import Audit, Planned, audit, broker_idle, plan, queued
from tests.chaos.recovery import UnackedSampler, consumers_of, recovery
from tests.support.redis_server import RedisServer, ServerTLS, start_redis
from tests.support.tls import CertificateAuthority
from worker_app.dlq.writer import store_for
from worker_app.factory import create_app
from worker_app.pools import load_catalogue
from worker_app.settings import Settings

# The queues of the default pool catalogue (worker_app/pools.yml).
QUEUE_NAMES = load_catalogue().queue_names

_RETURNED = re.compile(r"returned (\d+) message\(s\) that a stopped consumer had taken")
RETRY_POLICY = {"max_retries": 60, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 1}


@dataclass
class ChaosConfig:
    """The knobs of a chaos run (defaults: the full `make chaos`)."""

    tasks: int = 10_000
    transient: float = 0.20
    permanent: float = 0.01
    idempotent: float = 0.5
    duplicate: float = 0.05
    publish_rate: float = 100.0
    kill_every: tuple[float, float] = (2.0, 5.0)
    main_kill_share: float = 0.3
    redis_restart_at: float = 0.4
    redis_down_for: float = 2.0
    processes: int = 2
    max_time_limit: int = 10
    # The defaults of a production worker: the consumer heartbeats bring back what a killed
    # main process held (after the grace period); the visibility timeout is only a backstop.
    visibility_timeout: int = 3600
    consumer_grace: int = 30
    seed: int = 20261122
    settle_timeout: float = 600.0
    loglevel: str = "WARNING"
    # Redis on TLS only (``rediss://``, client certificates required, a throwaway CA).
    tls: bool = False


@dataclass
class Events:
    """What the run did to the system, with timestamps relative to its start."""

    started: float = field(default_factory=time.monotonic)
    kills: list[dict[str, Any]] = field(default_factory=list)
    redis: list[dict[str, Any]] = field(default_factory=list)
    publish_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self) -> float:
        return round(time.monotonic() - self.started, 2)


def _stack(workdir: Path, config: ChaosConfig) -> tuple[RedisServer, Any, Any, Fleet]:
    """Redis (AOF on, the role's ACL users), a producer app, the DLQ store, and the pools (not
    started yet)."""
    tls = None
    if config.tls:
        ca = CertificateAuthority.create(workdir / "ca")
        tls = ServerTLS(ca, ca.issue("redis"), auth_clients="yes")
    # As the redis role runs it: AOF, and its ACL file (the default user off).
    server = start_redis(workdir / "redis", appendonly=True, tls=tls, acl=True)
    env = {**worker_env(server.url(0), config), **tls_env(server)}
    settings = Settings.from_env(env)
    fleet = Fleet(
        workdir / "fleet", env, dict.fromkeys(QUEUE_NAMES, config.processes), config.loglevel
    )
    return server, create_app(settings), store_for(settings), fleet


def worker_env(broker_url: str, config: ChaosConfig) -> dict[str, str]:
    """The pools' environment on ``broker_url``."""
    return {
        "CELERY_BROKER_URL": broker_url,
        "WORKER_APP_TASK_MODULES": "tests.chaos.tasks",
        "WORKER_APP_LOG_FORMAT": "json",
        "WORKER_APP_MAX_TIME_LIMIT": str(config.max_time_limit),
        "WORKER_APP_VISIBILITY_TIMEOUT": str(config.visibility_timeout),
        "WORKER_APP_CONSUMER_GRACE": str(config.consumer_grace),
    }


def tls_env(server: RedisServer) -> dict[str, str]:
    """The TLS settings of a host that trusts ``server``'s CA and has a client certificate
    (none for a plain server)."""
    if server.tls is None or server.client_cert is None:
        return {}
    return {
        "WORKER_APP_REDIS_TLS_CA_FILE": str(server.tls.ca.cert_file),
        "WORKER_APP_REDIS_TLS_CERT_FILE": str(server.client_cert.cert_file),
        "WORKER_APP_REDIS_TLS_KEY_FILE": str(server.client_cert.key_file),
    }


def _publish(app: Any, task: Planned, task_id: str, events: Events) -> None:
    """Publish until the broker takes it (the producer's own retries ride out a restart)."""
    while True:
        try:
            app.send_task(
                task.task, args=[task.token, task.fail_times, task.permanent],
                queue=task.queue, task_id=task_id, retry=True, retry_policy=RETRY_POLICY,
            )  # fmt: skip
            return
        except (OperationalError, redis.RedisError, OSError):
            with events.lock:
                events.publish_errors += 1
            time.sleep(0.5)


def _publisher(
    app: Any, planned: list[Planned], rate: float, events: Events, done: threading.Event
) -> None:
    began = time.monotonic()
    for n, task in enumerate(planned):
        _publish(app, task, task.token, events)
        if task.duplicate:
            _publish(app, task, f"{task.token}-dup", events)
        ahead = began + (n + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    done.set()


def _killer(
    fleet: Fleet, config: ChaosConfig, events: Events, stop: threading.Event, rng: random.Random
) -> None:
    while not stop.wait(rng.uniform(*config.kill_every)):
        try:
            processes = fleet.processes()
        except OSError:
            continue
        mains = [p for p in processes if p[1] == "main"]
        children = [p for p in processes if p[1] == "child"]
        pool_of = mains if (rng.random() < config.main_kill_share or not children) else children
        if not pool_of:
            continue
        pool, kind, pid = rng.choice(pool_of)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        with events.lock:
            events.kills.append({"at": events.at(), "pool": pool, "kind": kind, "pid": pid})


def _restart_redis(server: RedisServer, down_for: float, events: Events) -> None:
    began = time.monotonic()
    server.stop()
    time.sleep(down_for)
    server.start_again()
    events.redis.append({"at": events.at(), "event": "restart",
                         "unavailable_s": round(time.monotonic() - began, 2)})  # fmt: skip


def _safe(call: Callable[[], Any], default: Any) -> Any:
    try:
        return call()
    except (redis.RedisError, OSError):
        return default


def run_chaos(
    workdir: Path, config: ChaosConfig, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Publish ``config.tasks`` tasks while killing workers and restarting Redis; audit."""
    rng = random.Random(config.seed)
    planned = plan(config.tasks, seed=config.seed, transient=config.transient,
                   permanent=config.permanent, idempotent=config.idempotent,
                   duplicate=config.duplicate)  # fmt: skip
    server, app, store, fleet = _stack(workdir, config)
    events = Events()
    published, stop_chaos = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    samples: list[dict[str, Any]] = []
    sampler: UnackedSampler | None = None
    try:
        fleet.start()
        events.started = time.monotonic()
        log(f"chaos: {config.tasks} tasks at {config.publish_rate}/s; SIGKILL every "
            f"{config.kill_every[0]}-{config.kill_every[1]} s; Redis restart at "
            f"{config.redis_restart_at:.0%} accounted")  # fmt: skip
        threads = [
            threading.Thread(target=_publisher, args=(app, planned, config.publish_rate, events,
                                                       published), daemon=True),
            threading.Thread(target=_killer, args=(fleet, config, events, stop_chaos, rng),
                             daemon=True),
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        client = server.client(0)
        sampler = UnackedSampler(server.client(0), events.at)
        sampler.start()
        restarted = False
        deadline = None
        last_report = 0.0
        while True:
            time.sleep(1)
            current: Audit | None = _safe(lambda: audit(planned, client, store), None)
            if current is None:
                continue
            waiting = _safe(lambda: queued(client), 1)
            unacked = _safe(lambda: client.hlen("unacked"), -1)
            samples.append({"at": events.at(), "accounted": current.accounted,
                            "queued": waiting, "unacked": unacked})  # fmt: skip
            if events.at() - last_report >= 10:
                last_report = events.at()
                log(f"  t={events.at():6.1f}s accounted {current.accounted}/{config.tasks} "
                    f"queued {waiting} unacked {unacked} kills {len(events.kills)}")  # fmt: skip
            if not restarted and current.accounted >= config.redis_restart_at * config.tasks:
                log(f"  t={events.at():6.1f}s restarting Redis")
                _restart_redis(server, config.redis_down_for, events)
                restarted = True
            if (
                published.is_set()
                and not stop_chaos.is_set()
                and (waiting == 0 or current.accounted == config.tasks)
            ):
                stop_chaos.set()
                deadline = time.monotonic() + config.settle_timeout
                log(f"  t={events.at():6.1f}s queues drained: chaos stops, waiting for the "
                    f"messages killed workers held (grace {config.consumer_grace} s, "
                    f"visibility timeout {config.visibility_timeout} s)")  # fmt: skip
            if (
                stop_chaos.is_set()
                and current.accounted == config.tasks
                and _safe(lambda: broker_idle(client), False)
            ):
                break
            if deadline is not None and time.monotonic() > deadline:
                log("  settle timeout: auditing what is there")
                break
        elapsed = events.at()
        final = audit(planned, client, store)
        still_unacked = client.hlen("unacked")
        swept_dead = int(client.get("unacked_dead_consumers") or 0)
        logs = "".join(fleet.log(pool) for pool in QUEUE_NAMES)
    finally:
        stop_chaos.set()
        if sampler is not None:
            sampler.stop.set()
        fleet.stop()
        server.stop()
    kinds = Counter(k["kind"] for k in events.kills)
    gaps = [b["at"] - a["at"] for a, b in zip(events.kills, events.kills[1:], strict=False)]
    return {
        "config": {k: v for k, v in vars(config).items()},
        "broker_url_scheme": server.url(0).split("://", 1)[0],
        "audit": final.as_dict(),
        "duplicate_publishes": sum(1 for t in planned if t.duplicate),
        "kills": {"total": len(events.kills), "main": kinds["main"], "child": kinds["child"],
                  "median_gap_s": round(statistics.median(gaps), 2) if gaps else None},
        "redis": events.redis,
        "publish_retries": events.publish_errors,
        "duration_s": elapsed,
        "unacked_at_end": still_unacked,
        # Messages a killed main process had taken, returned by the transport's sweep.
        "in_flight_returned": sum(int(n) for n in _RETURNED.findall(logs)),
        "worker_unrecoverable_errors": logs.count("Unrecoverable error"),
        "max_unacked": max((s["unacked"] for s in samples), default=0),
        # How long the messages a killed main process held waited to be back on their queue.
        "recovery": recovery(sampler.tags if sampler else {}, events.kills),
        # Consumers the transport's sweep found dead: at most those of the main processes
        # killed (the connections the Redis restart broke are returned by their own process,
        # not deaths).
        "consumers_swept_dead": swept_dead,
        "consumers_of_killed_mains": consumers_of(
            sampler.consumers if sampler else set(),
            {k["pid"] for k in events.kills if k["kind"] == "main"},
        ),
        "timeline": samples,
        "kill_log": events.kills,
    }  # fmt: skip


def run_outage(
    workdir: Path, config: ChaosConfig, *, tasks: int = 3000, outage: float = 30.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Redis unreachable for ``outage`` seconds under a backlog: workers must ride it out
    (same main processes, no restarts by supervisord) and drain the backlog afterwards."""
    planned = plan(tasks, seed=config.seed + 1, transient=0.0, permanent=0.0,
                   idempotent=config.idempotent, duplicate=0.0, prefix="o")  # fmt: skip
    server, app, store, fleet = _stack(workdir, config)
    events = Events()
    try:
        fleet.start()
        before = fleet.info()
        for task in planned:
            _publish(app, task, task.token, events)
        client = server.client(0)
        while audit(planned, client, store).accounted < tasks // 10:
            time.sleep(0.2)
        backlog = queued(client)
        log(f"outage: Redis down for {outage:.0f} s with {backlog} tasks queued")
        server.stop()
        down_at = time.monotonic()
        during: list[dict[str, dict[str, Any]]] = []
        while time.monotonic() - down_at < outage:
            during.append(fleet.info())
            time.sleep(1)
        server.start_again()
        back_at = time.monotonic()
        first_progress = None
        accounted_at_return = _safe(lambda: audit(planned, client, store).accounted, 0)
        deadline = back_at + config.settle_timeout
        while time.monotonic() < deadline:
            current = _safe(lambda: audit(planned, client, store), None)
            if current is not None:
                if first_progress is None and current.accounted > accounted_at_return:
                    first_progress = time.monotonic() - back_at
                if current.accounted == tasks and _safe(lambda: broker_idle(client), False):
                    break
            time.sleep(1)
        drained_after = time.monotonic() - back_at
        final = audit(planned, client, store)
        swept_dead = int(client.get("unacked_dead_consumers") or 0)
        after = fleet.info()
        logs = {pool: fleet.log(pool) for pool in QUEUE_NAMES}
    finally:
        fleet.stop()
        server.stop()
    restarts = {
        name: sorted({snap[name]["pid"] for snap in [before, *during, after]} - {0})
        for name in before
    }
    return {
        "tasks": tasks,
        "backlog_at_outage": backlog,
        "outage_s": outage,
        "audit": final.as_dict(),
        "main_pids_seen": restarts,
        "states_during_outage": sorted({p["statename"] for s in during for p in s.values()}),
        "first_progress_after_s": round(first_progress, 2) if first_progress else None,
        "drained_after_s": round(drained_after, 2),
        # No process died: the connections the outage broke are not counted as dead consumers.
        "consumers_swept_dead": swept_dead,
        "reconnect_messages": {
            pool: text.count("Trying to re-establish the connection") for pool, text in logs.items()
        },
    }
