"""``worker-app node drain|wait`` against real workers: consumers cancelled, work finished."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import redis

from tests.integration.conftest import StartWorker, records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def node_cli(worker_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker_app.cli", "node", *args],
        env={**worker_env, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_drain_waits_for_the_running_task_and_stops_consuming(
    start_pool_worker: StartWorker, worker_env: dict[str, str], client_app: Any, state: redis.Redis
) -> None:
    node = f"default-drain{uuid.uuid4().hex[:6]}@local"
    start_pool_worker("default", "--concurrency", "1", node=node)
    running = uuid.uuid4().hex[:8]
    client_app.send_task("examples.sleepy", args=[running, 3.0], queue="default")
    wait_until(lambda: records(state, f"started:{running}"), what="the long task to start")

    drained = node_cli(worker_env, "drain", node, "--timeout", "60")
    assert drained.returncode == 0, drained.stderr
    # It returned only once the running task had finished.
    assert records(state, f"finished:{running}") == ["0"]
    report = json.loads(drained.stdout)
    assert report["cancelled"] == {node: ["default"]}
    assert report["busy"] == {node: 0}

    # The node no longer consumes: a new task stays in Redis for other nodes.
    waiting = uuid.uuid4().hex[:8]
    client_app.send_task("examples.record", args=[waiting], queue="default")
    time.sleep(3)
    assert records(state, f"ran:{waiting}") == []
    assert state.llen("default") >= 1
    state.delete("default")  # nobody will take it in this module


def test_drain_reports_still_busy_at_the_deadline(
    start_pool_worker: StartWorker, worker_env: dict[str, str], client_app: Any, state: redis.Redis
) -> None:
    node = f"low-busy{uuid.uuid4().hex[:6]}@local"
    start_pool_worker("low", "--concurrency", "1", node=node)
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.sleepy", args=[token, 6.0], queue="low")
    wait_until(lambda: records(state, f"started:{token}"), what="the long task to start")

    drained = node_cli(worker_env, "drain", node, "--timeout", "1")
    assert drained.returncode == 3, drained.stdout + drained.stderr
    assert json.loads(drained.stdout)["busy"] == {node: 1}
    wait_until(lambda: records(state, f"finished:{token}"), timeout=30, what="the task to finish")


def test_wait_answers_for_live_nodes_and_fails_for_absent_ones(
    start_pool_worker: StartWorker, worker_env: dict[str, str]
) -> None:
    node = f"high-wait{uuid.uuid4().hex[:6]}@local"
    start_pool_worker("high", "--concurrency", "1", node=node)
    ok = node_cli(worker_env, "wait", node, "--timeout", "30")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"answering": [node]}
    absent = node_cli(worker_env, "wait", "nobody@nowhere", "--timeout", "2")
    assert absent.returncode == 1
    assert "no ping reply from nobody@nowhere" in absent.stderr
