"""Filtered, paginated DLQ listings (worker_app.dlq.query) against a real Redis."""

from __future__ import annotations

import uuid

import pytest

from tests.support.redis_server import RedisServer
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.query import (
    MAX_PER_PAGE,
    DeadLetterFilter,
    FilterError,
    matching_ids,
    page_of,
)
from worker_app.dlq.store import DeadLetterStore

pytestmark = pytest.mark.integration

NOW = 1_000_000.0


def _store(redis_server: RedisServer, **kwargs: float) -> DeadLetterStore:
    return DeadLetterStore(redis_server.client(2), prefix=f"q{uuid.uuid4().hex[:6]}", **kwargs)  # type: ignore[arg-type]


def _entry(
    n: int, age: float, queue: str = "default", task: str = "t.a",
    reason: str = "non_retryable", exception: str | None = "app.errors.Boom",
) -> DeadLetter:  # fmt: skip
    return DeadLetter(id=f"id-{n}", reason=reason, task_name=task, task_id=f"id-{n}", queue=queue,
                      exception_type=exception, failed_at=NOW - age)  # fmt: skip


@pytest.fixture
def filled(redis_server: RedisServer) -> DeadLetterStore:
    store = _store(redis_server)
    store.add(_entry(1, 3600 * 30, queue="low", task="t.report"), now=NOW)
    store.add(_entry(2, 3600 * 5, task="t.charge", reason="retries_exhausted",
                     exception="requests.exceptions.Timeout"), now=NOW)  # fmt: skip
    store.add(_entry(3, 600, queue="critical", task="t.charge", reason="time_limit",
                     exception="billiard.exceptions.SoftTimeLimitExceeded"), now=NOW)  # fmt: skip
    store.add(_entry(4, 60, task="t.report", exception="app.errors.Boom"), now=NOW)
    store.add(_entry(5, 5, queue="low", task="t.unknown", reason="unknown_task",
                     exception=None), now=NOW)  # fmt: skip
    return store


def ids(store: DeadLetterStore, **params: str) -> list[str]:
    return matching_ids(store, DeadLetterFilter.from_params(params), now=NOW)


def test_filters_match_newest_first(filled: DeadLetterStore) -> None:
    assert ids(filled) == ["id-5", "id-4", "id-3", "id-2", "id-1"]
    assert ids(filled, queue="low") == ["id-5", "id-1"]
    assert ids(filled, task="t.charge") == ["id-3", "id-2"]
    assert ids(filled, reason="time_limit") == ["id-3"]
    assert ids(filled, exception="Timeout") == ["id-2"]  # the class name alone
    assert ids(filled, exception="requests.exceptions.Timeout") == ["id-2"]
    assert ids(filled, exception="exceptions.Timeout") == []  # no partial module paths
    assert ids(filled, older_than="1h") == ["id-2", "id-1"]
    assert ids(filled, newer_than="15m") == ["id-5", "id-4", "id-3"]
    assert ids(filled, newer_than="1d", older_than="2m") == ["id-3", "id-2"]
    assert ids(filled, task="t.report", queue="default") == ["id-4"]
    assert ids(filled, task_id="id-3") == ["id-3"]
    assert ids(filled, task_id="id-3", reason="non_retryable") == []
    assert ids(filled, task_id="no-such-id") == []
    assert ids(filled, task="t.report", older_than="1h", exception="Boom") == ["id-1"]


def test_pages_count_the_filtered_entries(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    for n in range(25):
        store.add(_entry(n, 1000 - n, queue="low" if n % 2 else "high"), now=NOW)
    first = page_of(store, DeadLetterFilter(queue="low"), number=1, per_page=5, now=NOW)
    assert (first.total, first.pages) == (12, 3)
    assert [e.id for e in first.entries] == ["id-23", "id-21", "id-19", "id-17", "id-15"]
    last = page_of(store, DeadLetterFilter(queue="low"), number=3, per_page=5, now=NOW)
    assert [e.id for e in last.entries] == ["id-3", "id-1"]
    beyond = page_of(store, DeadLetterFilter(queue="low"), number=9, per_page=5, now=NOW)
    assert (beyond.entries, beyond.total) == ([], 12)


def test_summaries_follow_every_change(filled: DeadLetterStore) -> None:
    summary_key = filled.keys[3]
    client = filled.client
    assert client.hlen(summary_key) == len(filled) == 5
    filled.remove("id-4")
    filled.add(_entry(1, 3600 * 30, queue="high", task="t.moved"), now=NOW)  # same id, new place
    assert client.hlen(summary_key) == 4
    assert ids(filled, task="t.moved") == ["id-1"] and ids(filled, task="t.report") == []
    filled.purge(older_than=3600, now=NOW)
    assert client.hlen(summary_key) == len(filled) == 2
    filled.purge()
    assert client.exists(summary_key) == 0


def test_entries_written_before_summaries_get_one_when_read(filled: DeadLetterStore) -> None:
    filled.client.delete(filled.keys[3])  # what a store from before the summary hash looks like
    assert ids(filled, task="t.charge") == ["id-3", "id-2"]
    assert filled.client.hlen(filled.keys[3]) == 5  # backfilled
    filled.client.hdel(filled.keys[0], "id-1")  # an entry vanishing meanwhile is skipped
    filled.client.hdel(filled.keys[3], "id-1")
    assert ids(filled, task="t.report") == ["id-4"]
    assert not filled.client.hexists(filled.keys[3], "id-1")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"colour": "red"}, "unknown filter 'colour'"),
        ({"reason": "boredom"}, "unknown reason 'boredom'"),
        ({"older_than": "yesterday"}, "'yesterday' is not a duration"),
        ({"task": "x" * 201}, "task is longer than 200 characters"),
    ],
)
def test_malformed_filters_say_what_is_wrong(params: dict[str, str], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        DeadLetterFilter.from_params(params)


def test_page_bounds(filled: DeadLetterStore) -> None:
    for per_page in (0, MAX_PER_PAGE + 1):
        with pytest.raises(FilterError, match="per_page must be between 1 and 200"):
            page_of(filled, DeadLetterFilter(), per_page=per_page)
    with pytest.raises(FilterError, match="page must be 1 or more"):
        page_of(filled, DeadLetterFilter(), number=0)
    assert DeadLetterFilter.from_params({"queue": " ", "task": "t.a"}) == DeadLetterFilter(
        task="t.a"
    )
    assert DeadLetterFilter.from_params({"older_than": "2h"}).as_params() == {"older_than": "7200s"}
