"""The shared rate limit across clients, and the Beat housekeeping task on a worker."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.integration.conftest import StartWorker
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore
from worker_app.ratelimit import Rate, SharedRateLimit

pytestmark = pytest.mark.integration


def test_rate_limit_is_shared_between_clients(redis_server: RedisServer) -> None:
    name = f"api-{uuid.uuid4().hex[:6]}"
    # Two separate connections stand for two worker processes.
    a = SharedRateLimit(redis_server.client(3), name, Rate(4, 1.0))
    b = SharedRateLimit(redis_server.client(3), name, Rate(4, 1.0))
    granted = [limiter.acquire() for limiter in (a, b, a, b)]
    assert granted == [0.0, 0.0, 0.0, 0.0]
    wait_a, wait_b = a.acquire(), b.acquire()
    assert 0 < wait_a <= 0.25
    assert 0 < wait_b <= 0.25
    time.sleep(wait_a + 0.01)
    assert a.acquire() == 0.0


def test_beat_schedule_trims_the_dlq(
    start_pool_worker: StartWorker, client_app: Any, store: DeadLetterStore
) -> None:
    schedule = client_app.conf.beat_schedule["trim-dead-letters"]
    assert schedule["task"] == "worker_app.maintenance.trim_dlq"
    stale = DeadLetter(id=f"old-{uuid.uuid4().hex[:6]}", reason="non_retryable", task_name="t",
                       task_id=None, queue="low", failed_at=time.time() - 7200)  # fmt: skip
    # Written directly with a generous cap, as if it had aged in place.
    store.client.hset(store.keys[0], stale.id, stale.to_json())
    store.client.zadd(store.keys[1], {stale.id: stale.failed_at})
    store.client.hincrby(store.keys[2], "low\x1ft", 1)
    start_pool_worker("low", "--concurrency", "1", WORKER_APP_DLQ_MAX_AGE="3600")
    queue = schedule["options"]["queue"]
    assert queue == "low"  # the default catalogue's maintenance_queue
    client_app.send_task("worker_app.maintenance.trim_dlq", queue=queue)
    wait_until(lambda: stale.id not in [e.id for e in store.iter_entries()], what="the trim")
    assert ("low", "t") not in store.stats().by_queue_and_task
