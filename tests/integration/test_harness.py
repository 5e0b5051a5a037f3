"""The harness itself: a real redis-server and a real Celery worker run a task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer
from tests.support.workers import start_worker

pytestmark = pytest.mark.integration


def test_worker_runs_a_task_from_its_queue(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {
        "CELERY_BROKER_URL": redis_server.url(0),
        "CELERY_RESULT_BACKEND": redis_server.url(1),
    }
    worker = start_worker(
        ["celery", "-A", "worker_app", "worker", "-Q", "default", "-c", "1",
         "-n", "harness@%h", "-l", "INFO", "--without-gossip", "--without-mingle"],
        env,
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        from celery import Celery  # noqa: PLC0415

        from worker_app.factory import create_app  # noqa: PLC0415
        from worker_app.settings import Settings  # noqa: PLC0415

        client: Celery = create_app(Settings.from_env(env))
        result = client.send_task("worker_app.ping", queue="default")
        answer = result.get(timeout=30)
        assert "pong" in answer
        # The message went through Redis as JSON: nothing is left queued.
        assert redis_server.client(0).llen("default") == 0
        stored = redis_server.client(1).get(f"celery-task-meta-{result.id}")
        assert stored is not None
        assert json.loads(stored)["status"] == "SUCCESS"
    finally:
        worker.stop()
    assert worker.process.returncode == 0, worker.log()
