"""The metrics endpoint of one worker node, correct under prefork.

``prepare(node)`` runs in the worker's main process before anything imports
prometheus_client: it points ``PROMETHEUS_MULTIPROC_DIR`` at a directory of
this node's own, emptied (values of a previous run must not leak in). Every
pool process then writes its own value files there; the endpoint, served by
the main process, merges them with ``MultiProcessCollector`` and adds the
live pool state. Files of pool processes that died are marked dead at each
scrape, so live gauges never count a killed child.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger("worker_app.metrics")

_worker: Any = None
_lock = threading.Lock()


def metrics_dir(node: str, base: str | None = None) -> Path:
    """The directory of ``node``'s value files."""
    root = base or os.environ.get("WORKER_APP_METRICS_DIR") or "/tmp/worker_app-metrics"  # noqa: S108
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", node)
    return Path(root) / safe


def prepare(node: str, base: str | None = None) -> Path:
    """Empty this node's directory and switch prometheus_client to multiprocess mode."""
    if "prometheus_client" in __import__("sys").modules and not os.environ.get(
        "PROMETHEUS_MULTIPROC_DIR"
    ):
        raise RuntimeError("prometheus_client was imported before the metrics directory was set")
    path = metrics_dir(node, base)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o750)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def mark_dead_processes(path: Path) -> list[int]:
    """``mark_process_dead`` for every pid with value files that is no longer alive."""
    from prometheus_client import multiprocess  # noqa: PLC0415

    dead: set[int] = set()
    for file in path.glob("*.db"):
        match = re.search(r"_(\d+)\.db$", file.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


class PoolCollector:
    """Live state of this node's pool, read in the main process at scrape time.

    ``celery_worker_up`` is not here: the broker exporter reports it for every node from the
    workers' heartbeats, so it turns 0 when a node stops instead of vanishing with it (and is
    not counted twice); Prometheus' own ``up`` says whether this endpoint answers."""

    def __init__(self, node: str) -> None:
        from worker_app.metrics.worker_metrics import host_of  # noqa: PLC0415

        self.hostname = host_of(node)

    def collect(self) -> Iterator[Any]:
        """Pool size, busy processes, active tasks."""
        from celery.worker import state  # noqa: PLC0415
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        worker = _worker
        size = GaugeMetricFamily(
            "worker_app_worker_pool_processes", "Processes in the pool.", labels=["hostname"]
        )
        busy = GaugeMetricFamily(
            "worker_app_worker_pool_busy_processes",
            "Pool processes running a task now.",
            labels=["hostname"],
        )
        active = GaugeMetricFamily(
            "celery_worker_tasks_active", "Tasks running now.", labels=["hostname"]
        )
        requests = list(state.active_requests)
        pool = getattr(worker, "pool", None)
        processes = getattr(pool, "num_processes", None) or getattr(worker, "concurrency", 0) or 0
        size.add_metric([self.hostname], float(processes))
        busy.add_metric(
            [self.hostname], float(len({r.worker_pid for r in requests if r.worker_pid}))
        )
        active.add_metric([self.hostname], float(len(requests)))
        yield size
        yield busy
        yield active


def serve(hostname: str, port: int, address: str, path: Path) -> Any:
    """Start the HTTP endpoint (a daemon thread of the main process)."""
    from prometheus_client import (  # noqa: PLC0415
        CollectorRegistry,
        disable_created_metrics,
        multiprocess,
        start_http_server,
    )

    disable_created_metrics()  # type: ignore[no-untyped-call]

    class _Registry(CollectorRegistry):
        def collect(self) -> Iterator[Any]:
            with _lock:
                mark_dead_processes(path)
            yield from super().collect()

    registry = _Registry()
    multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    registry.register(PoolCollector(hostname))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    logger.info("metrics on http://%s:%d/metrics", address, port)
    return server


def attach(worker: Any) -> None:
    """Remember the running worker (for the pool collector)."""
    global _worker  # noqa: PLW0603 - one worker per process
    _worker = worker


def init_breaker_states(app: Any) -> None:
    """Publish the current state of every breaker the registered tasks use."""
    from worker_app.breaker import CircuitBreaker  # noqa: PLC0415
    from worker_app.configuration import settings_of  # noqa: PLC0415
    from worker_app.metrics.worker_metrics import BREAKER_VALUES, breaker_state  # noqa: PLC0415
    from worker_app.state_redis import state_client  # noqa: PLC0415

    settings = settings_of(app)
    names: set[str] = set()
    for task in app.tasks.values():
        name = getattr(task, "circuit_breaker", None)
        if name:
            names.add(str(name))
    for name in sorted(names):
        try:
            state = CircuitBreaker(state_client(settings), name, prefix=settings.key_prefix).state()
        except Exception:
            logger.exception("could not read breaker %s", name)
            continue
        breaker_state.labels(name).set(BREAKER_VALUES[state.value])
