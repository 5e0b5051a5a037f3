"""Redis failing under a task: nothing is acknowledged that did not happen.

Found by the chaos run (tests/chaos): Celery's ``Task.retry`` turns a retry it
cannot publish into ``Reject(requeue=False)``, which drops the message on Redis;
an error of worker_app's own Redis before the task ran used to be acknowledged
as a failure. Both now keep the message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.exceptions import Reject

from tests.integration.conftest import StartWorker, records
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, start_redis
from tests.support.waiting import wait_until
from worker_app.factory import create_app
from worker_app.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def unreachable_app() -> Any:
    """An app whose broker refuses connections (nothing listens on its port)."""
    app = create_app(
        Settings.from_env(
            {
                "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
                "WORKER_APP_TASK_MODULES": "worker_app.examples",
            }
        )
    )
    app.loader.import_default_modules()
    return app


def _running(app: Any, name: str) -> Any:
    task = app.tasks[name]
    task.push_request(
        id=str(uuid.uuid4()),
        retries=0,
        called_directly=False,
        delivery_info={"routing_key": "default"},
    )
    return task


def test_a_retry_that_cannot_be_published_requeues_the_message(unreachable_app: Any) -> None:
    task = _running(unreachable_app, "examples.flaky")
    try:
        with pytest.raises(Reject) as excinfo:
            task.retry(exc=ConnectionError("upstream down"), countdown=1)
    finally:
        task.pop_request()
    assert excinfo.value.requeue is True


def test_a_deferral_that_cannot_be_published_requeues_the_message(unreachable_app: Any) -> None:
    task = _running(unreachable_app, "examples.idempotent_charge")
    try:
        with pytest.raises(Reject) as excinfo:
            task.defer(1.0, "testing")
    finally:
        task.pop_request()
    assert excinfo.value.requeue is True


@pytest.fixture
def state_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A second Redis for worker_app's own keys (WORKER_APP_REDIS_URL), apart from the broker."""
    server = start_redis(tmp_path / "state")
    yield server
    server.stop()


def test_a_task_whose_state_redis_is_down_is_deferred_not_lost(
    start_pool_worker: StartWorker, state_redis: RedisServer, client_app: Any, state: redis.Redis
) -> None:
    worker = start_pool_worker("default", WORKER_APP_REDIS_URL=state_redis.url(0))
    order = uuid.uuid4().hex[:8]
    state_redis.stop()
    client_app.send_task("examples.idempotent_charge", args=[order, 100], queue="default")
    # The idempotency claim fails before the task runs: it is deferred, not acked as failed.
    worker.wait_for_log("worker_app's Redis is unavailable", timeout=30)
    state_redis.start_again()
    charged = wait_until(
        lambda: [
            raw
            for raw in state_redis.client(0).lrange(f"worker_app:examples:charged:{order}", 0, -1)
        ],
        timeout=60,
        what="the charge after the state Redis came back",
    )
    assert len(charged) == 1
    assert records(state, f"charged:{order}") == [], "the broker's Redis holds no task state"
