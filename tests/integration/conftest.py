"""Fixtures for integration tests: environment, client app, DLQ store, workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.redis_server import RedisServer
from tests.support.workers import WorkerProcess, start_worker
from worker_app.dlq.store import DeadLetterStore
from worker_app.dlq.writer import store_for
from worker_app.factory import create_app
from worker_app.settings import Settings

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture(scope="module")
def worker_env(redis_server: RedisServer) -> dict[str, str]:
    """The environment a worker host would have, pointing at the test Redis."""
    return {
        "CELERY_BROKER_URL": redis_server.url(0),
        "CELERY_RESULT_BACKEND": redis_server.url(1),
        "WORKER_APP_TASK_MODULES": "worker_app.examples",
        "WORKER_APP_LOG_FORMAT": "json",
    }


@pytest.fixture(scope="module")
def settings(worker_env: dict[str, str]) -> Settings:
    """Settings as the workers see them."""
    return Settings.from_env(worker_env)


@pytest.fixture(scope="module")
def client_app(settings: Settings) -> Any:
    """A producer app (what an application server uses to publish)."""
    return create_app(settings)


@pytest.fixture(scope="module")
def store(settings: Settings) -> DeadLetterStore:
    """The DLQ store the workers write to."""
    return store_for(settings)


@pytest.fixture(scope="module")
def state(redis_server: RedisServer) -> redis.Redis:
    """A client for worker_app's own keys (and the examples' records)."""
    return redis_server.client(0)


@pytest.fixture(scope="module")
def start_pool_worker(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartWorker]:
    """Start ``worker-app worker --pool NAME`` processes; all stopped after the module."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("workers")

    def start(
        pool: str, *extra: str, node: str | None = None, metrics_port: int = 0, **env: str
    ) -> WorkerProcess:
        args = ["worker_app.cli", "worker", "--pool", pool, "--no-events"]
        args += ["--metrics-port", str(metrics_port)]
        env.setdefault("WORKER_APP_METRICS_DIR", str(Path(logs) / "metrics"))
        if node:
            args += ["--hostname", node]
        args += [*extra, "--without-gossip", "--without-mingle"]
        log = Path(logs) / f"{node or pool}-{len(started)}.log"
        worker = start_worker(args, {**worker_env, **env}, log, ready_text="ready.")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def records(state: redis.Redis, kind: str) -> list[str]:
    """The values an example task recorded under ``kind`` (timestamps dropped)."""
    return [
        raw.decode().split(" ", 1)[1] for raw in state.lrange(f"worker_app:examples:{kind}", 0, -1)
    ]


def record_times(state: redis.Redis, kind: str) -> list[float]:
    """The timestamps of an example task's records under ``kind``."""
    return [
        float(raw.decode().split(" ", 1)[0])
        for raw in state.lrange(f"worker_app:examples:{kind}", 0, -1)
    ]
