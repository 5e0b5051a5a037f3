"""Messages a worker cannot run, and workers that die mid-task: nothing is lost.

Each bad message ends as exactly one DLQ entry with the reason (and whatever could be read of
it), nothing of it stays queued or unacknowledged, and the worker goes on with the next message.
"""

from __future__ import annotations

import os
import pickle
import signal
import uuid
from typing import Any

import pytest
import redis
from kombu import Producer

from tests.integration.conftest import StartWorker, records
from tests.support.broker import nothing_pending
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def high_worker(start_pool_worker: StartWorker) -> WorkerProcess:
    """A `high` pool worker with two processes."""
    return start_pool_worker("high", "--concurrency", "2")


def _entry(store: DeadLetterStore, entry_id: str) -> Any:
    try:
        return store.get(entry_id)
    except UnknownEntryError:
        return None


def _publish_raw(client_app: Any, body: bytes, content_type: str, headers: dict[str, Any]) -> None:
    with client_app.connection_for_write() as conn:
        producer = Producer(conn)
        producer.publish(
            body,
            exchange="high",
            routing_key="high",
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
            headers=headers,
        )


def _task_headers(task_id: str, name: str = "examples.record") -> dict[str, Any]:
    return {"lang": "py", "task": name, "id": task_id, "root_id": task_id, "retries": 0}


def _still_consuming(client_app: Any, state: redis.Redis) -> None:
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.record", args=[token], queue="high")
    wait_until(lambda: records(state, f"ran:{token}"), timeout=20, what="a normal task after it")


def _settled(client_app: Any, state: redis.Redis, store: DeadLetterStore, dead_before: int) -> None:
    """The bad message left one DLQ entry and nothing in the broker; later messages run."""
    _still_consuming(client_app, state)
    wait_until(
        lambda: nothing_pending(state),
        what="the broker to hold nothing of it",
    )
    assert len(store) == dead_before + 1, "exactly one DLQ entry for the bad message"


@pytest.mark.bad_input
def test_unknown_task_name_is_dead_lettered(
    high_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    dead_before = len(store)
    result = client_app.send_task(
        "billing.no_such_task", args=[1, 2], kwargs={"x": 3}, queue="high"
    )
    entry = wait_until(lambda: _entry(store, result.id), what="the DLQ entry")
    assert entry.reason == "unknown_task"
    assert entry.task_name == "billing.no_such_task"
    assert entry.args == [1, 2]
    assert entry.kwargs == {"x": 3}
    assert entry.queue == "high"
    assert entry.replayable
    _settled(client_app, state, store, dead_before)


@pytest.mark.bad_input
def test_undecodable_body_is_dead_lettered(
    high_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    dead_before = len(store)
    task_id = str(uuid.uuid4())
    _publish_raw(client_app, b'{"not json', "application/json", _task_headers(task_id))
    entry = wait_until(lambda: _entry(store, task_id), what="the DLQ entry")
    assert entry.reason == "undecodable"
    assert entry.task_name == "examples.record"
    assert entry.raw_body == '{"not json'
    assert entry.exception_type == "kombu.exceptions.DecodeError"
    assert not entry.replayable
    _settled(client_app, state, store, dead_before)


@pytest.mark.bad_input
def test_pickle_message_is_refused_and_dead_lettered(
    high_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    dead_before = len(store)
    task_id = str(uuid.uuid4())
    token = uuid.uuid4().hex[:8]
    body = pickle.dumps(((token,), {}, {}))
    _publish_raw(client_app, body, "application/x-python-serialize", _task_headers(task_id))
    entry = wait_until(lambda: _entry(store, task_id), what="the DLQ entry")
    assert entry.reason == "undecodable"
    assert entry.exception_type == "kombu.exceptions.ContentDisallowed"
    assert entry.exception_message == (
        "Refusing to deserialize untrusted content of type pickle (application/x-python-serialize)"
    )
    assert entry.content_type == "application/x-python-serialize"
    assert records(state, f"ran:{token}") == [], "a pickled task must never run"
    _settled(client_app, state, store, dead_before)


@pytest.mark.bad_input
def test_message_that_is_not_a_task_is_dead_lettered(
    high_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    dead_before = len(store)
    marker = uuid.uuid4().hex
    _publish_raw(client_app, f'{{"hello": "{marker}"}}'.encode(), "application/json", {})
    entry = wait_until(
        lambda: next(
            (e for e in store.iter_entries(queue="high") if marker in (e.raw_body or "")), None
        ),
        what="the DLQ entry",
    )
    assert entry.reason == "invalid_message"
    assert entry.exception_type == "celery.exceptions.InvalidTaskError"
    assert entry.exception_message == "not a Celery task message: it has no 'task' header"
    _settled(client_app, state, store, dead_before)


def test_sigkill_of_the_process_running_a_task_runs_it_again(
    high_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    token = uuid.uuid4().hex[:8]
    result = client_app.send_task("examples.sleepy", args=[token, 3], queue="high")
    child = int(wait_until(lambda: records(state, f"pid:{token}"), what="the task to start")[0])
    assert child != high_worker.process.pid
    os.kill(child, signal.SIGKILL)
    # reject_on_worker_lost puts the message back; a new child runs it to the end.
    wait_until(lambda: records(state, f"finished:{token}"), timeout=60, what="the rerun")
    assert len(records(state, f"started:{token}")) == 2
    assert records(state, f"finished:{token}") == ["0"]
    assert _entry(store, result.id) is None
