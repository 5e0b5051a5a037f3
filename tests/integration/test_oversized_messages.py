"""Oversized arguments: the producer refuses them and queues nothing; a worker runs what a
producer without the guard published anyway (with a warning), retries included."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis
from celery import Celery

from tests.integration.conftest import StartWorker, records
from tests.support.broker import nothing_pending, snapshot
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess
from worker_app.configuration import transport_options
from worker_app.dlq.store import DeadLetterStore
from worker_app.examples import record
from worker_app.factory import create_app
from worker_app.message_size import SETTING, MessageTooLargeError, body_size, task_body
from worker_app.pools import load_catalogue
from worker_app.queues import celery_queues
from worker_app.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.bad_input]

#: The workers' (and the small producer's) limit in this module: small, so tests stay light.
LIMIT = 4096
#: Bytes of a one-argument body around an empty string argument.
OVERHEAD = body_size(task_body([""], {}), "json")


@pytest.fixture(scope="module")
def high_worker(start_pool_worker: StartWorker) -> WorkerProcess:
    """A `high` pool worker whose own limit is LIMIT."""
    return start_pool_worker("high", "--concurrency", "1", **{SETTING: str(LIMIT)})


@pytest.fixture(scope="module")
def small_producer(settings: Settings) -> Any:
    """A producer app with the guard at LIMIT bytes."""
    return create_app(Settings(**{**settings.__dict__, "max_message_bytes": LIMIT}))


@pytest.fixture(scope="module")
def foreign_producer(settings: Settings) -> Celery:
    """An application server that configures plain Celery itself: same broker and settings,
    no size guard."""
    catalogue = load_catalogue(settings.pools_file)
    app = Celery("foreign", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options(settings),
        task_queues=celery_queues(catalogue),
        task_default_queue=catalogue.default_queue,
    )
    return app


def _token(length: int) -> str:
    """A unique token of exactly ``length`` characters (the examples record it as a key)."""
    head = uuid.uuid4().hex
    return head + "-" * (length - len(head))


def test_default_limit_refuses_a_megabyte_of_arguments_and_queues_nothing(
    client_app: Any, state: redis.Redis
) -> None:
    payload = _token(1024 * 1024)
    size = body_size(task_body([payload], {}), "json")
    before = snapshot(state)
    with pytest.raises(MessageTooLargeError) as excinfo:
        client_app.send_task("examples.record", args=[payload], queue="high")
    assert str(excinfo.value) == (
        f"task examples.record not published: its message body is {size} bytes, over the "
        f"limit of 1048576 bytes ({SETTING}); pass a reference to the data (a key, a path, "
        f"a URL) instead of the data itself, or raise {SETTING}"
    )
    # The task object's delay() takes the same road.
    with pytest.raises(MessageTooLargeError, match=r"examples\.record not published"):
        client_app.tasks[record.name].delay(payload)
    assert snapshot(state) == before, "nothing may be queued"


def test_the_limit_is_inclusive_and_a_body_one_byte_over_is_refused(
    high_worker: WorkerProcess, small_producer: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    exact = _token(LIMIT - OVERHEAD)
    assert body_size(task_body([exact], {}), "json") == LIMIT
    over = _token(LIMIT - OVERHEAD + 1)
    before = snapshot(state)
    with pytest.raises(MessageTooLargeError, match=f"is {LIMIT + 1} bytes, over the limit of"):
        small_producer.send_task("examples.record", args=[over], queue="high")
    assert snapshot(state) == before
    dead_before = len(store)
    small_producer.send_task("examples.record", args=[exact], queue="high")
    wait_until(lambda: records(state, f"ran:{exact}"), what="the task at the limit to run")
    assert records(state, f"ran:{over}") == []
    assert len(store) == dead_before
    assert "oversized message" not in high_worker.log()


def _warnings(worker: WorkerProcess, task_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in worker.log().splitlines()
        if line.startswith("{") and "oversized message" in line and task_id in line
    ]


def test_a_worker_runs_an_oversized_message_from_an_unguarded_producer_and_says_so(
    high_worker: WorkerProcess,
    foreign_producer: Celery,
    state: redis.Redis,
    store: DeadLetterStore,
) -> None:
    token = _token(3 * LIMIT)
    size = body_size(task_body([token], {}), "json")
    dead_before = len(store)
    result = foreign_producer.send_task("examples.record", args=[token], queue="high")
    wait_until(lambda: records(state, f"ran:{token}"), what="the oversized task to run")
    (warning,) = wait_until(lambda: _warnings(high_worker, result.id), what="the warning")
    assert warning["level"] == "warning"
    assert warning["message"] == (
        f"oversized message: examples.record[{result.id}] is {size} bytes, over "
        f"{SETTING}={LIMIT}; running it anyway (its producer does not enforce the limit)"
    )
    assert (warning["message_bytes"], warning["max_message_bytes"]) == (size, LIMIT)
    assert len(store) == dead_before, "run, not dead-lettered"
    wait_until(lambda: nothing_pending(state), what="the message to be acknowledged")


def test_an_oversized_message_keeps_its_retries(
    high_worker: WorkerProcess,
    foreign_producer: Celery,
    state: redis.Redis,
    store: DeadLetterStore,
) -> None:
    token = _token(2 * LIMIT)
    dead_before = len(store)
    result = foreign_producer.send_task("examples.flaky", args=[token, 2], queue="high")
    # Each retry republishes the same arguments from inside the worker: not refused.
    wait_until(
        lambda: records(state, f"attempts:{token}") == ["0", "1", "2"],
        timeout=60,
        what="two retries and the successful third attempt",
    )
    assert len(_warnings(high_worker, result.id)) == 3  # the original and both retries
    assert len(store) == dead_before
    assert "MessageTooLargeError" not in high_worker.log()
    wait_until(lambda: nothing_pending(state), what="the message to be acknowledged")
