"""`make bench` against stock Celery: what the bundle costs compared with the Celery a team
runs today (issue 22).

Stock is ``tests.support.stock_celery``: a plain ``celery.Celery`` on kombu's own Redis
transport with the settings that matter (late acks, reject on worker lost, prefetch 1, the
priority steps), and its worker gets the very ``celery worker`` arguments of the packaged
pool (``Pool.worker_argv``: concurrency, child limits, time limits, ``-O fair``). Each run
starts its own redis-server, so Redis's CPU counters (``INFO cpu``) and command counts
(``INFO commandstats``) belong to one variant alone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, start_redis
from tests.support.workers import WorkerProcess, start_worker
from worker_app.pools import load_catalogue

THROUGHPUT_VARIANTS = ("stock", "plain", "instrumented")
TASK = {"stock": "bench.plain_noop", "plain": "bench.plain_noop",
        "instrumented": "bench.instrumented_noop"}  # fmt: skip
QUIET = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
IDLE_QUEUES = "critical,high,default,low"


def env(server: RedisServer) -> dict[str, str]:
    """Both variants' processes: the broker, the bench tasks, quiet logs."""
    return {
        "CELERY_BROKER_URL": server.url(0),
        "WORKER_APP_TASK_MODULES": "tests.bench.tasks",
        "STOCK_CELERY_TASK_MODULES": "tests.bench.tasks",
        "WORKER_APP_LOG_FORMAT": "text",
        "WORKER_APP_METRICS_DIR": str(server.workdir / "metrics"),
    }


class RedisCost:
    """Redis's CPU seconds and command calls between two snapshots."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.cpu, self.calls = self._read()

    def _read(self) -> tuple[float, int]:
        cpu = self.client.info("cpu")
        stats = self.client.info("commandstats")
        calls = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls

    def since(self) -> tuple[float, int]:
        """CPU seconds and commands since this snapshot (the snapshot's own INFO excluded)."""
        cpu, calls = self._read()
        return cpu - self.cpu, calls - self.calls


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.005)


def _preload(server: RedisServer, variant: str, count: int) -> None:
    """``count`` copies of one real message published by the variant's own producer, each
    with its own task id and delivery tag."""
    producer = "stock" if variant == "stock" else "worker_app"
    subprocess.run(
        [sys.executable, "-m", "tests.bench.publish_latency", producer, "0"],
        env={**os.environ, **env(server)}, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    client = server.client(0)
    # The producer published 50 warm-up messages of bench.plain_noop: keep one as the
    # template, with the task name of the variant.
    template = client.lindex("default", 0)
    assert template is not None, "the producer published nothing"
    client.delete("default")
    message = json.loads(template.decode().replace("bench.plain_noop", TASK[variant]))
    remaining = count
    while remaining > 0:
        batch = min(remaining, 5000)
        client.lpush("default", *(_copy(message) for _ in range(batch)))
        remaining -= batch


def _copy(message: dict[str, Any]) -> str:
    """``message`` as another task: its own task id and delivery tag, as a producer makes them
    (identical copies would share one unacked entry and one result key)."""
    task_id, tag = str(uuid.uuid4()), str(uuid.uuid4())
    headers = {**message["headers"], "id": task_id, "root_id": task_id}
    properties = {**message["properties"], "correlation_id": task_id, "delivery_tag": tag}
    return json.dumps({**message, "headers": headers, "properties": properties})


def _throughput_worker(server: RedisServer, variant: str, log: Path) -> WorkerProcess:
    pool = load_catalogue().pool("default")
    if variant == "stock":
        argv = pool.worker_argv(concurrency=2, hostname="stock@bench")
        args = ["celery", "-A", "tests.support.stock_celery", *argv, "--loglevel", "WARNING"]
    else:
        metrics = "0" if variant == "plain" else str(free_port())
        args = ["worker_app.cli", "worker", "--pool", "default", "--concurrency", "2",
                "--no-events", "--metrics-port", metrics, "--loglevel", "WARNING"]  # fmt: skip
    return start_worker([*args, *QUIET], env(server), log, ready_text="")


def bench_throughput(tmp: Path, tasks: int, runs: int) -> dict[str, Any]:
    """(a) no-op drain rate and Redis's cost per 1,000 tasks: stock Celery, worker_app with a
    plain task, worker_app with RetryableTask and metrics; the order rotates every run."""
    rates: dict[str, list[float]] = {v: [] for v in THROUGHPUT_VARIANTS}
    cpu_ms: dict[str, list[float]] = {v: [] for v in THROUGHPUT_VARIANTS}
    commands: dict[str, list[float]] = {v: [] for v in THROUGHPUT_VARIANTS}
    for run in range(runs):
        order = THROUGHPUT_VARIANTS[run % 3 :] + THROUGHPUT_VARIANTS[: run % 3]
        for variant in order:
            server = start_redis(tmp / f"tp-{variant}-{run}")
            try:
                _preload(server, variant, tasks)
                worker = _throughput_worker(server, variant, tmp / f"tp-{variant}-{run}.log")
                client = server.client(0)
                # The clock starts at the first message taken (worker start-up excluded) and
                # stops when Redis holds nothing for it.
                _wait(lambda c=client: c.llen("default") < tasks, timeout=120)
                began, cost = time.perf_counter(), RedisCost(client)
                _wait(lambda c=client: c.llen("default") == 0 and c.hlen("unacked") == 0,
                      timeout=600)  # fmt: skip
                elapsed = time.perf_counter() - began
                cpu, calls = cost.since()
                rates[variant].append(tasks / elapsed)
                cpu_ms[variant].append(cpu * 1000 / tasks * 1000)
                commands[variant].append(calls / tasks)
                worker.stop()
            finally:
                server.stop()
    med = {v: statistics.median(rates[v]) for v in THROUGHPUT_VARIANTS}
    return {
        "tasks_per_run": tasks,
        "runs": runs,
        **{f"{v}_tasks_per_s": round(med[v], 1) for v in THROUGHPUT_VARIANTS},
        "ratio_plain_to_stock": round(med["plain"] / med["stock"], 3),
        "ratio_instrumented_to_stock": round(med["instrumented"] / med["stock"], 3),
        "ratio_instrumented_to_plain": round(med["instrumented"] / med["plain"], 3),
        "redis_cpu_ms_per_1000": {
            v: round(statistics.median(cpu_ms[v]), 1) for v in THROUGHPUT_VARIANTS
        },
        "redis_commands_per_task": {
            v: round(statistics.median(commands[v]), 2) for v in THROUGHPUT_VARIANTS
        },
        "all_runs": {v: [round(r, 1) for r in rates[v]] for v in THROUGHPUT_VARIANTS},
    }


def bench_idle(tmp: Path, consumers: int, seconds: float) -> dict[str, Any]:
    """Redis's cost of ``consumers`` idle worker nodes (one process each, the four packaged
    queues): stock Celery blocks in BRPOP; worker_app's transport polls by script."""
    found = {}
    for variant, app in (("stock", "tests.support.stock_celery"), ("worker_app", "worker_app")):
        server = start_redis(tmp / f"idle-{variant}")
        workers: list[WorkerProcess] = []
        try:
            for n in range(consumers):
                workers.append(start_worker(
                    ["celery", "-A", app, "worker", "-Q", IDLE_QUEUES, "-c", "1", "-O", "fair",
                     "-n", f"{variant}{n}@bench", "-l", "INFO", *QUIET],
                    env(server), tmp / f"idle-{variant}-{n}.log",
                ))  # fmt: skip
            time.sleep(3)  # every consumer in its steady idle loop
            cost = RedisCost(server.client(0))
            time.sleep(seconds)
            cpu, calls = cost.since()
            found[variant] = {
                "redis_cpu_ms_per_s": round(cpu * 1000 / seconds, 2),
                "commands_per_s": round(calls / seconds, 1),
            }
        finally:
            for worker in workers:
                worker.stop()
            server.stop()
    return {"consumers": consumers, "seconds": seconds, **found}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bench_publish(tmp: Path, count: int, runs: int) -> dict[str, Any]:
    """``delay()`` latency p50/p99: a stock producer vs worker_app's (its publish guard,
    headers and transport), each in its own process, alternating."""
    per: dict[str, dict[str, list[float]]] = {
        v: {"p50": [], "p99": []} for v in ("stock", "worker_app")
    }
    for run in range(runs):
        for variant in ("stock", "worker_app") if run % 2 == 0 else ("worker_app", "stock"):
            server = start_redis(tmp / f"pub-{variant}-{run}")
            try:
                out = subprocess.run(
                    [sys.executable, "-m", "tests.bench.publish_latency", variant, str(count)],
                    env={**os.environ, **env(server)}, check=True, capture_output=True,
                    text=True, timeout=600,
                )  # fmt: skip
                times = json.loads(out.stdout)
                per[variant]["p50"].append(percentile(times, 0.5))
                per[variant]["p99"].append(percentile(times, 0.99))
            finally:
                server.stop()
    med = {v: {q: statistics.median(x) for q, x in qs.items()} for v, qs in per.items()}
    return {
        "publishes_per_run": count,
        "runs": runs,
        "stock_p50_ms": round(med["stock"]["p50"], 3),
        "stock_p99_ms": round(med["stock"]["p99"], 3),
        "worker_app_p50_ms": round(med["worker_app"]["p50"], 3),
        "worker_app_p99_ms": round(med["worker_app"]["p99"], 3),
    }
