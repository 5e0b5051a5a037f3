"""`make bench`: throughput and Redis cost against stock Celery, priority isolation, DLQ replay,
exporter cost, idle wake-up, idle consumers, publish latency and the converge.

Each figure is the median of several runs on this machine, measured side by
side in one invocation; ratios compare runs made in the same invocation.
Completions are counted outside the system under test (Redis is polled until
the queue and the unacked hash are empty). Results: a table on stdout and
JSON in bench-results/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import report, stock
from tests.bench.console_list import bench_console_list
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, start_redis
from tests.support.workers import WorkerProcess, start_worker
from worker_app.configuration import PRIORITY_SEP
from worker_app.dlq.bulk import run_bulk
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.query import DeadLetterFilter, matching_ids
from worker_app.dlq.writer import store_for
from worker_app.factory import create_app
from worker_app.settings import Settings

RESULTS = Path("bench-results")


def _env(server: RedisServer) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": server.url(0),
        "WORKER_APP_TASK_MODULES": "tests.bench.tasks",
        "WORKER_APP_LOG_FORMAT": "json",
        "WORKER_APP_METRICS_DIR": str(server.workdir / "metrics"),
    }


def _app(server: RedisServer) -> Any:
    return create_app(Settings.from_env(_env(server)))


def _preload(server: RedisServer, app: Any, task: str, queue: str, count: int, **opts: Any) -> None:
    """``count`` copies of one real task message on ``queue`` (fast: pipelined LPUSH)."""
    client = server.client(0)
    app.send_task(task, queue=queue, **opts)
    key = queue if not opts.get("priority") else f"{queue}{PRIORITY_SEP}{opts['priority']}"
    template = client.lindex(key, 0)
    assert template is not None, f"no message on {key}"
    remaining = count - 1
    while remaining > 0:
        batch = min(remaining, 5000)
        client.lpush(key, *([template] * batch))
        remaining -= batch


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.005)


def _worker(server: RedisServer, log: Path, *args: str, **env: str) -> WorkerProcess:
    return start_worker(list(args), {**_env(server), **env}, log, ready_text="ready.")


def bench_isolation(tmp: Path, backlog: int, probes: int, runs: int) -> dict[str, Any]:
    """(b) critical enqueue->start p50/p99 with `backlog` low tasks queued vs none."""
    result: dict[str, dict[str, list[float]]] = {
        "idle": {"p50": [], "p99": []}, "backlog": {"p50": [], "p99": []}
    }  # fmt: skip
    samples: dict[str, list[float]] = {"idle": [], "backlog": []}
    for run in range(runs):
        for condition in ("idle", "backlog"):
            server = start_redis(tmp / f"iso-{condition}-{run}")
            try:
                app = _app(server)
                if condition == "backlog":
                    _preload(server, app, "bench.instrumented_noop", "low", backlog)
                worker = _worker(
                    server, tmp / f"iso-{condition}-{run}.log", "worker_app.cli", "worker",
                    "--pool", "critical", "--concurrency", "2", "--no-events",
                    "--metrics-port", str(free_port()), "--loglevel", "INFO",
                    "--without-gossip", "--without-mingle",
                )  # fmt: skip
                for _ in range(probes):
                    app.send_task("bench.wait_probe", queue="critical")
                    time.sleep(0.02)
                client = server.client(0)
                _wait(lambda c=client: c.llen("bench:waits") >= probes, timeout=120)
                waits = [float(v) * 1000 for v in client.lrange("bench:waits", 0, -1)]
                if condition == "backlog":
                    assert client.llen("low") == backlog, "the low backlog must stay queued"
                result[condition]["p50"].append(stock.percentile(waits, 0.5))
                result[condition]["p99"].append(stock.percentile(waits, 0.99))
                samples[condition].extend(waits)
                worker.stop()
            finally:
                server.stop()
    med = {c: {q: statistics.median(v) for q, v in qs.items()} for c, qs in result.items()}
    return {
        "low_backlog": backlog,
        "critical_probes_per_run": probes,
        "runs": runs,
        "idle_p50_ms": round(med["idle"]["p50"], 2),
        "idle_p99_ms": round(med["idle"]["p99"], 2),
        "backlog_p50_ms": round(med["backlog"]["p50"], 2),
        "backlog_p99_ms": round(med["backlog"]["p99"], 2),
        "ratio_p50_backlog_to_idle": round(med["backlog"]["p50"] / med["idle"]["p50"], 3),
        "ratio_p99_backlog_to_idle": round(med["backlog"]["p99"] / med["idle"]["p99"], 3),
        "samples_ms": {c: [round(v, 3) for v in s] for c, s in samples.items()},
    }


WAKEUP_QUEUES = ("critical", "high", "default", "low")
WAKEUP_STEPS = (0, 3, 6, 9)


def bench_wakeup(tmp: Path, probes: int) -> dict[str, Any]:
    """(f) publish -> start of a task published to an idle worker, per queue and priority
    step: stock Celery (kombu's transport, a stock producer) and worker_app (its transport
    and producer), each worker consuming the four queues with one process."""
    variants = {
        "stock": ["celery", "-A", "tests.support.stock_celery"],
        "worker_app": ["celery", "-A", "worker_app"],
    }
    found: dict[str, dict[str, list[float]]] = {}
    for name, command in variants.items():
        server = start_redis(tmp / f"wake-{name}")
        try:
            env = {**_env(server), "STOCK_CELERY_TASK_MODULES": "tests.bench.tasks"}
            worker = start_worker(
                [*command, "worker", "-Q", ",".join(WAKEUP_QUEUES), "-c", "1", "-O", "fair",
                 "--without-gossip", "--without-mingle", "-l", "INFO", "-n", f"{name}@bench"],
                env, tmp / f"wake-{name}.log", ready_text="ready.",
            )  # fmt: skip
            if name == "stock":
                from tests.support import stock_celery  # noqa: PLC0415 - a stock producer

                producer = stock_celery.app
                producer.conf.broker_url = server.url(0)
                # kombu's own class: this process serves redis:// with worker_app's by now.
                producer.conf.broker_transport = "kombu.transport.redis:Transport"
            else:
                producer = _app(server)
            client = server.client(0)
            time.sleep(2)  # idle: the worker waits on Redis
            per_key: dict[str, list[float]] = {}
            for queue in WAKEUP_QUEUES:
                for step in WAKEUP_STEPS:
                    key = f"bench:wake:{queue}:{step}"
                    waits = per_key.setdefault(key, [])
                    for n in range(1, probes + 1):
                        producer.send_task(
                            "bench.stamp_probe", args=[time.time(), key, server.url(0)],
                            queue=queue, priority=step,
                        )  # fmt: skip
                        _wait(lambda c=client, k=key, n=n: c.llen(k) >= n, timeout=10)
                        waits.append(float(client.lindex(key, -1)) * 1000)
                        time.sleep(0.05)  # idle again
            worker.stop()
            found[name] = per_key
        finally:
            server.stop()
    rows = {}
    for queue in WAKEUP_QUEUES:
        for step in WAKEUP_STEPS:
            key = f"bench:wake:{queue}:{step}"
            theirs, ours = found["stock"][key], found["worker_app"][key]
            rows[f"{queue}/{step}"] = {
                "stock_p50_ms": round(stock.percentile(theirs, 0.5), 2),
                "stock_p99_ms": round(stock.percentile(theirs, 0.99), 2),
                "worker_app_p50_ms": round(stock.percentile(ours, 0.5), 2),
                "worker_app_p99_ms": round(stock.percentile(ours, 0.99), 2),
            }
    worst = max(rows.values(), key=lambda r: r["worker_app_p50_ms"] / max(r["stock_p50_ms"], 0.01))
    return {"probes_per_key": probes, "by_queue_and_step": rows, "worst": worst}


def bench_replay(tmp: Path, entries: int, runs: int) -> dict[str, Any]:
    """(c) DLQ replay rate of ``worker-app dlq replay --all`` (its own figure: the time it
    prints, start-up excluded), and of a filtered bulk delete (the console's, half the
    entries)."""
    replays, deletes = [], []
    for run in range(runs):
        server = start_redis(tmp / f"replay-{run}")
        try:
            settings = Settings.from_env(_env(server))
            store = store_for(settings)
            now = time.time()
            for n in range(entries):
                entry = DeadLetter(
                    id=f"e-{n}", reason="retries_exhausted", task_name="bench.instrumented_noop",
                    task_id=f"e-{n}", queue="default", failed_at=now - entries + n, args=[n],
                    traceback="Traceback (most recent call last):\n" * 20,
                )  # fmt: skip
                store.add(entry, now=now)
            out = subprocess.run(
                [sys.executable, "-m", "worker_app.cli", "dlq", "replay", "--all"],
                env={**os.environ, **_env(server)}, capture_output=True, text=True,
                check=True, timeout=600,
            ).stdout  # fmt: skip
            took = re.search(rf"^{entries} replayed in ([0-9.]+)s$", out, re.MULTILINE)
            assert took, out[-500:]
            replays.append(entries / float(took.group(1)))
            assert len(store) == 0
            assert server.client(0).llen("default") == entries
            for n in range(entries):
                doomed = DeadLetter(id=f"d-{n}", reason="non_retryable", task_id=f"d-{n}",
                                    task_name=f"bench.t{n % 2}", queue="default",
                                    failed_at=now - entries + n)  # fmt: skip
                store.add(doomed, now=now)
            ids = matching_ids(store, DeadLetterFilter(task="bench.t1"))
            began = time.perf_counter()
            result = run_bulk(store, None, "delete", ids)
            deletes.append(len(ids) / (time.perf_counter() - began))
            assert result.done == len(ids) == entries // 2 and len(store) == entries - len(ids)
        finally:
            server.stop()
    return {"entries_per_run": entries, "runs": runs,
            "replays_per_s": round(statistics.median(replays), 1),
            "deletes_per_s": round(statistics.median(deletes), 1),
            "all_runs": [round(r, 1) for r in replays]}  # fmt: skip


def bench_exporter(tmp: Path, queued: int, scrapes: int) -> dict[str, Any]:
    """(d) exporter scrape time with `queued` messages over 4 queues x 4 priority steps."""
    server = start_redis(tmp / "exporter")
    try:
        app = _app(server)
        per_cell = queued // 16
        for queue in ("critical", "high", "default", "low"):
            for priority in (0, 3, 6, 9):
                _preload(server, app, "bench.instrumented_noop", queue, per_cell, priority=priority)
        port = free_port()
        exporter = start_worker(
            ["worker_app.cli", "exporter", "--port", str(port), "--no-events"],
            _env(server), tmp / "exporter.log", ready_text="exporter on http://",
        )  # fmt: skip
        wall = []
        body = ""
        for _ in range(scrapes):
            began = time.perf_counter()
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read().decode()
            wall.append((time.perf_counter() - began) * 1000)
        exporter.stop()
        reported = sum(
            float(line.split()[-1]) for line in body.splitlines()
            if line.startswith("celery_queue_length{")
        )  # fmt: skip
        return {
            "queued": per_cell * 16,
            "exporter_reported_total": reported,
            "scrapes": scrapes,
            "scrape_ms_p50": round(statistics.median(wall), 2),
            "scrape_ms_max": round(max(wall), 2),
            "redis_commands_per_scrape": 16 + 4,
        }
    finally:
        server.stop()


def _rehearse(env: str, step: str) -> str:
    """``make rehearse ENV=env STEP=step``; its output (raises on failure)."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "rehearse", f"ENV={env}", f"STEP={step}"],
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"rehearse {step} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def bench_converge(env: str, idempotent_runs: int) -> dict[str, Any]:
    """(e) ansible/site.yml on the inventory ``env``'s containers: a first converge on fresh
    hosts, then idempotent re-runs (changed=0 enforced by tools/rehearse.sh)."""
    _rehearse(env, "down")
    try:
        up = _rehearse(env, "up")
        out = _rehearse(env, "converge")
        for _ in range(idempotent_runs - 1):
            out += _rehearse(env, "idempotence")
    finally:
        _rehearse(env, "down")
    converge = [int(v) for v in re.findall(r"rehearse: converge took (\d+) s", out)]
    idempotent = [int(v) for v in re.findall(r"rehearse: idempotence pass took (\d+) s", out)]
    hosts = re.search(r"rehearse: (\d+) containers up", up)
    return {
        "inventory": env,
        "hosts": int(hosts.group(1)) if hosts else None,
        "converge_s": converge[0],
        "idempotent_s": idempotent,
        "idempotent_median_s": statistics.median(idempotent),
    }


def main() -> int:
    """Run the benchmarks and print/write their figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--no-converge", action="store_true", help="skip (e), the converge on containers"
    )
    parser.add_argument(
        "--converge-env",
        default="production",
        choices=("production", "staging"),
        help="the inventory (e) converges (default: production, the issue's figure)",
    )
    parser.add_argument("--idempotent-runs", type=int, default=3)
    parser.add_argument(
        "--no-readme", action="store_true", help="do not rewrite README's section and the chart"
    )
    args = parser.parse_args()
    quick = args.quick
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as raw:
        tmp = Path(raw)
        print("running (a) throughput, stock Celery vs worker_app ...", flush=True)
        a = stock.bench_throughput(tmp, tasks=1000 if quick else 3000, runs=1 if quick else 3)
        print("running (g) idle consumers and (h) publish latency, stock vs worker_app ...",
              flush=True)  # fmt: skip
        print("running (i) the console's dead-letter list over 10,000 entries ...", flush=True)
        i = bench_console_list(tmp, entries=10_000, reads=5 if quick else 15)
        g = stock.bench_idle(tmp, consumers=8, seconds=5 if quick else 30)
        h = stock.bench_publish(tmp, count=500 if quick else 5000, runs=2 if quick else 4)
        print("running (b) priority isolation ...", flush=True)
        b = bench_isolation(tmp, backlog=10_000 if quick else 100_000,
                            probes=50 if quick else 200, runs=1 if quick else 3)  # fmt: skip
        print("running (c) DLQ replay ...", flush=True)
        c = bench_replay(tmp, entries=2000 if quick else 10_000, runs=1 if quick else 3)
        print("running (d) exporter scrape ...", flush=True)
        d = bench_exporter(tmp, queued=10_000 if quick else 100_000, scrapes=20 if quick else 50)
        print("running (f) idle wake-up per queue and priority step, stock vs worker_app ...",
              flush=True)  # fmt: skip
        f = bench_wakeup(tmp, probes=5 if quick else 20)
    results: dict[str, Any] = {
        "machine": report.machine(),
        "throughput": a,
        "isolation": b,
        "replay": c,
        "exporter": d,
        "wakeup": f,
        "idle": g,
        "publish": h,
        "console_list": i,
    }
    if not (quick or args.no_converge):
        print(f"running (e) site converge and idempotent re-runs ({args.converge_env} on "
              "containers) ...", flush=True)  # fmt: skip
        results["converge"] = bench_converge(args.converge_env, args.idempotent_runs)
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=2))
    table = report.rows(results)
    width = max(len(r[0]) for r in table)
    m = results["machine"]
    print(f"\nmachine: {m['cpus']} x {m['cpu_model']}, {m['memory_gib']} GiB, {m['os']}, "
          f"Python {m['python']}, Redis {m['redis']}, Celery {m['celery']}")  # fmt: skip
    print(f"{'benchmark':<{width}}  result")
    print(f"{'-' * width}  {'-' * 24}")
    for name, value in table:
        print(f"{name:<{width}}  {value}")
    print(f"\nwritten: {RESULTS / 'bench.json'}")
    if not (quick or args.no_readme):
        report.chart(b["samples_ms"], b["low_backlog"])
        updated = report.update_readme(results)
        print(f"written: {report.CHART}" + (", README.md (Benchmarks)" if updated else
              " (README.md has no bench markers: not updated)"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
