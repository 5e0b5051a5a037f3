"""Worker-side metrics under prefork and the broker-side exporter, against the truth."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import StartWorker, records
from tests.support.broker import PRIORITY_SUFFIXES
from tests.support.ports import free_port
from tests.support.prom import promtool_check, scrape, series, total
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, start_worker
from worker_app.configuration import PRIORITY_SEP
from worker_app.dlq.store import DeadLetterStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def metrics_worker(start_pool_worker: StartWorker) -> tuple[WorkerProcess, str]:
    """A prefork `default` worker (3 processes) with its metrics endpoint."""
    port = free_port()
    worker = start_pool_worker("default", "--concurrency", "3", metrics_port=port)
    return worker, f"http://127.0.0.1:{port}/metrics"


@pytest.fixture(scope="module")
def exporter(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`worker-app exporter` on a free port."""
    port = free_port()
    log = Path(tmp_path_factory.mktemp("exporter")) / "exporter.log"
    proc = start_worker(
        ["worker_app.cli", "exporter", "--port", str(port)],
        worker_env,
        log,
        ready_text="exporter on http://",
    )
    yield f"http://127.0.0.1:{port}/metrics"
    proc.stop()


def test_counters_equal_the_truth_under_prefork(
    metrics_worker: tuple[WorkerProcess, str], client_app: Any, state: redis.Redis
) -> None:
    _worker, url = metrics_worker
    run = uuid.uuid4().hex[:8]
    ok, bad, flaky = 30, 7, 5
    results = [client_app.send_task("examples.record", args=[f"{run}-{i}"], queue="default")
               for i in range(ok)]  # fmt: skip
    results += [client_app.send_task("examples.invalid_input", args=[f"{run}-bad-{i}"],
                                     queue="default") for i in range(bad)]  # fmt: skip
    results += [client_app.send_task("examples.flaky", args=[f"{run}-fl-{i}", 2], queue="default")
                for i in range(flaky)]  # fmt: skip
    for result in results:
        wait_until(result.ready, timeout=60, what=f"task {result.id}")
    # The pool really spread the work over several processes.
    pids = {line["pid"] for line in _json_lines(_worker) if line.get("task_name")}
    assert len(pids) >= 2

    def done() -> str | None:
        text = scrape(url)
        return text if total(text, "celery_task_succeeded_total") >= ok + flaky else None

    text = wait_until(done, what="all successes in the metrics")
    assert total(text, "celery_task_succeeded_total", name="examples.record") == ok
    assert total(text, "celery_task_succeeded_total", name="examples.flaky") == flaky
    assert total(text, "celery_task_failed_total", name="examples.invalid_input",
                 exception="NonRetryableError") == bad  # fmt: skip
    assert total(text, "celery_task_retried_total", name="examples.flaky") == flaky * 2
    assert total(text, "celery_task_started_total") == ok + bad + flaky * 3
    assert total(text, "worker_app_dlq_entries_written_total", reason="non_retryable") == bad
    # Queue wait: one observation per start.
    assert total(text, "celery_task_queue_wait_seconds_count") == ok + bad + flaky * 3
    assert total(text, "celery_task_runtime_count") == ok + bad + flaky * 3
    # The broker exporter reports celery_worker_up (from heartbeats), not the node itself.
    assert "celery_worker_up" not in text
    # Outcomes that did not happen read 0 (as celery-exporter's do), on the task's labels.
    for counter in ("revoked", "rejected", "retried"):
        assert re.search(
            rf'^celery_task_{counter}_total{{[^}}]*name="examples.record"[^}}]*}} 0\.0$', text, re.M
        ), counter
    hosts = set(re.findall(r'^celery_task_received_total{[^}]*hostname="([^"]*)"', text, re.M))
    assert hosts and all("@" not in h for h in hosts), hosts  # the node's host part
    assert total(text, "worker_app_worker_pool_processes") == 3
    assert promtool_check(text) == ""


def test_eta_delay_is_not_counted_as_queue_wait(
    metrics_worker: tuple[WorkerProcess, str], client_app: Any, state: redis.Redis
) -> None:
    _worker, url = metrics_worker
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.sleepy", args=[token, 0], queue="default", countdown=3)
    wait_until(lambda: records(state, f"finished:{token}"), timeout=30, what="the ETA task")

    def observed() -> str | None:
        text = scrape(url)
        count = total(text, "celery_task_queue_wait_seconds_count", name="examples.sleepy")
        return text if count >= 1 else None

    text = wait_until(observed, what="the observation")
    assert total(text, "celery_task_queue_wait_seconds_count", name="examples.sleepy") == 1
    # It waited 3 s for its ETA, but its queue wait is what came after the ETA.
    assert total(text, "celery_task_queue_wait_seconds_sum", name="examples.sleepy") < 1.0


def test_a_revoked_task_is_counted(
    metrics_worker: tuple[WorkerProcess, str], client_app: Any
) -> None:
    """Celery's task_revoked passes the request's context (it has no name): counted by task."""
    _worker, url = metrics_worker
    before = total(scrape(url), "celery_task_revoked_total", name="examples.sleepy")
    result = client_app.send_task("examples.sleepy", args=["revoked", 0], queue="default",
                                  countdown=3)  # fmt: skip
    client_app.control.revoke(result.id)
    wait_until(lambda: total(scrape(url), "celery_task_revoked_total", name="examples.sleepy")
               == before + 1, timeout=30, what="the revoked task counted")  # fmt: skip


def test_killed_child_is_not_counted_as_busy(
    metrics_worker: tuple[WorkerProcess, str], client_app: Any, state: redis.Redis
) -> None:
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    _worker, url = metrics_worker
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.sleepy", args=[token, 2], queue="default")
    child = int(wait_until(lambda: records(state, f"pid:{token}"), what="the task")[0])
    assert total(scrape(url), "celery_worker_tasks_active") == 1
    os.kill(child, signal.SIGKILL)
    wait_until(lambda: records(state, f"finished:{token}"), timeout=30, what="the rerun")
    wait_until(lambda: total(scrape(url), "celery_worker_tasks_active") == 0, what="idle")
    assert total(scrape(url), "worker_app_worker_pool_busy_processes") == 0


def test_exporter_queue_lengths_equal_redis_truth(
    exporter: str, client_app: Any, redis_server: RedisServer
) -> None:
    # Publish to queues nobody consumes here (`high`, `low`, `critical`).
    plan = {("high", 0): 4, ("high", 3): 2, ("high", 9): 5, ("low", 6): 7, ("critical", 0): 1}
    for (queue, priority), count in plan.items():
        for _ in range(count):
            client_app.send_task("examples.record", args=["x"], queue=queue, priority=priority)
    client = redis_server.client(0)
    text = scrape(exporter)
    for (queue, step), count in plan.items():
        key = queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"
        assert client.llen(key) == count
        assert total(text, "worker_app_queue_length_by_priority", queue_name=queue,
                     priority=str(step)) == count  # fmt: skip
    for queue in ("high", "low", "critical"):
        truth = sum(client.llen(f"{queue}{suffix}") for suffix in PRIORITY_SUFFIXES)
        assert total(text, "celery_queue_length", queue_name=queue) == truth
    assert promtool_check(text) == ""


def test_exporter_dlq_matches_dlq_stats(
    exporter: str, metrics_worker: tuple[WorkerProcess, str], worker_env: dict[str, str],
    store: DeadLetterStore,
) -> None:  # fmt: skip
    assert len(store) > 0  # the prefork test above dead-lettered some
    proc = subprocess.run(
        [sys.executable, "-m", "worker_app.cli", "dlq", "stats", "--json"],
        env={**worker_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    stats = json.loads(proc.stdout)
    text = scrape(exporter)
    assert total(text, "worker_app_dlq_entries") == stats["total"]
    for row in stats["by_queue_and_task"]:
        assert total(text, "worker_app_dlq_length", queue_name=row["queue"],
                     name=row["task"]) == row["count"]  # fmt: skip
    assert len(series(text, "worker_app_dlq_length")) == len(stats["by_queue_and_task"])
    assert abs(total(text, "worker_app_dlq_oldest_entry_age_seconds")
               - stats["oldest_age_seconds"]) < 30  # fmt: skip


def test_exporter_counts_sent_tasks_from_events(exporter: str, client_app: Any) -> None:
    before = total(scrape(exporter), "celery_task_sent_total", name="examples.notify_user")
    for user in range(3):
        client_app.send_task("examples.notify_user", args=[user], queue="critical")
    wait_until(
        lambda: (
            total(scrape(exporter), "celery_task_sent_total", name="examples.notify_user")
            == before + 3
        ),
        what="three task-sent events",
    )
    time.sleep(0.2)


def test_exporter_reports_every_node_up_and_then_down_and_its_queues_consumers(
    start_pool_worker: StartWorker, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """celery_worker_up comes from the heartbeats: 1 while a node lives, 0 (not gone) after a
    warm shutdown (worker-offline) or a SIGKILL (silence past --worker-timeout); consumers per
    queue from the nodes' answers."""
    port = free_port()
    exporter_proc = start_worker(
        ["worker_app.cli", "exporter", "--port", str(port), "--worker-timeout", "5",
         "--inspect-interval", "1"],
        worker_env, tmp_path / "exporter.log", ready_text="exporter on http://",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def up(node: str) -> float | None:
        values = [
            v for labels, v in series(scrape(url), "celery_worker_up") if labels["node"] == node
        ]
        return values[0] if values else None

    try:
        warm = start_pool_worker("low", "--concurrency", "2", node="low@compat-warm")
        killed = start_pool_worker("low", "--concurrency", "1", node="low@compat-killed")
        wait_until(lambda: up("low@compat-warm") == up("low@compat-killed") == 1.0,
                   timeout=30, what="both nodes up")  # fmt: skip
        labels = {lb["node"]: lb["hostname"] for lb, _v in series(scrape(url), "celery_worker_up")}
        assert labels["low@compat-warm"] == "compat-warm"  # the host part, as celery-exporter's

        def consumers() -> tuple[float, float, float]:
            text = scrape(url)
            return (total(text, "celery_active_worker_count", queue_name="low"),
                    total(text, "celery_active_consumer_count", queue_name="low"),
                    total(text, "celery_active_process_count", queue_name="low"))  # fmt: skip

        wait_until(lambda: consumers() == (2.0, 2.0, 3.0), timeout=30, what="two consumers of low")
        warm.stop()
        wait_until(lambda: up("low@compat-warm") == 0.0, timeout=10, what="worker-offline → 0")
        assert up("low@compat-killed") == 1.0
        os.killpg(killed.process.pid, signal.SIGKILL)
        killed.process.wait()
        wait_until(lambda: up("low@compat-killed") == 0.0, timeout=20, what="silence → 0")
        assert up("low@compat-warm") == 0.0  # still there, at 0: "down", not "unknown"
        wait_until(lambda: consumers() == (0.0, 0.0, 0.0), timeout=10, what="no consumers left")
    finally:
        exporter_proc.stop()


def _json_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
