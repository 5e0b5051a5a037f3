"""The DLQ store's Lua scripts against a real Redis: caps, counts, compare-and-delete."""

from __future__ import annotations

import uuid

import pytest

from tests.support.redis_server import RedisServer
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError

pytestmark = pytest.mark.integration


def _store(redis_server: RedisServer, **kwargs: float) -> DeadLetterStore:
    return DeadLetterStore(redis_server.client(2), prefix=f"t{uuid.uuid4().hex[:6]}", **kwargs)  # type: ignore[arg-type]


def _entry(n: int, failed_at: float, queue: str = "default", task: str = "t.a") -> DeadLetter:
    return DeadLetter(id=f"id-{n}", reason="non_retryable", task_name=task, task_id=f"id-{n}",
                      queue=queue, failed_at=failed_at)  # fmt: skip


def test_same_id_twice_is_one_entry(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    assert store.add(_entry(1, 1000.0), now=1000.0) is True
    assert store.add(_entry(1, 1001.0), now=1001.0) is False
    assert len(store) == 1
    assert store.stats().by_queue_and_task == {("default", "t.a"): 1}
    assert store.get("id-1").failed_at == 1001.0


def test_count_cap_drops_the_oldest_atomically(redis_server: RedisServer) -> None:
    store = _store(redis_server, max_entries=3)
    for n in range(5):
        store.add(_entry(n, 1000.0 + n, queue="high" if n % 2 else "low"), now=1010.0)
    assert len(store) == 3
    assert [e.id for e in store.iter_entries()] == ["id-4", "id-3", "id-2"]
    stats = store.stats()
    assert stats.total == 3
    assert stats.by_queue() == {"low": 2, "high": 1}
    assert stats.oldest_failed_at == 1002.0


def test_age_cap_and_purge_older_than(redis_server: RedisServer) -> None:
    store = _store(redis_server, max_age=100)
    store.add(_entry(1, 1000.0), now=1000.0)
    store.add(_entry(2, 1050.0), now=1050.0)
    store.add(_entry(3, 1120.0), now=1120.0)  # id-1 is now older than 100 s
    assert sorted(e.id for e in store.iter_entries()) == ["id-2", "id-3"]
    assert store.purge(older_than=30, now=1120.0) == 1
    assert [e.id for e in store.iter_entries()] == ["id-3"]
    assert store.stats().by_queue_and_task == {("default", "t.a"): 1}
    assert store.trim(now=1300.0) == 1
    assert store.stats().total == 0
    assert store.stats().by_queue_and_task == {}


def test_remove_with_expected_keeps_an_entry_that_changed(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    first = _entry(1, 1000.0)
    store.add(first, now=1000.0)
    store.add(_entry(1, 1005.0), now=1005.0)  # the replayed task died again
    assert store.remove("id-1", expected=first) is False
    assert len(store) == 1
    with pytest.raises(UnknownEntryError):
        store.remove("nope")


def test_remove_many_removes_the_unchanged_and_says_what_became_of_each(
    redis_server: RedisServer,
) -> None:
    store = _store(redis_server)
    entries = [_entry(n, 1000.0 + n, task="t.b" if n % 2 else "t.a") for n in range(6)]
    for entry in entries:
        store.add(entry, now=1010.0)
    store.add(_entry(1, 2000.0), now=2000.0)  # id-1 died again meanwhile
    store.remove("id-2")  # id-2 went meanwhile
    assert store.remove_many(entries) == [1, -1, 0, 1, 1, 1]
    assert [e.id for e in store.iter_entries()] == ["id-1"]
    assert store.stats().by_queue_and_task == {("default", "t.a"): 1}
    assert store.client.hkeys(store.keys[3]) == [b"id-1"]  # summaries follow
    # Without the check, the changed one goes too.
    assert store.remove_many([entries[1]], unchanged=False) == [1]
    assert len(store) == 0 and store.remove_many([]) == []


def test_remove_many_keeps_the_counts_right_for_any_queue_and_task_name(
    redis_server: RedisServer,
) -> None:
    """remove_many takes the counts field of an unchanged entry from the caller (no JSON
    decoded in Redis) and reads it from the stored JSON otherwise: the counts agree either
    way, whatever the names hold."""
    store = _store(redis_server)
    nameless = DeadLetter(id="id-2", reason="non_retryable", task_name=None, task_id=None,
                          queue=None, failed_at=1002.0)  # fmt: skip
    odd = [_entry(0, 1000.0, queue="café", task="t.é"), _entry(1, 1001.0, queue='q"/x'),
           nameless, _entry(3, 1003.0, queue="low", task="t.c"),
           _entry(4, 1004.0, queue="low", task="t.c")]  # fmt: skip
    for entry in odd:
        store.add(entry, now=1010.0)
    store.add(_entry(4, 1005.0, queue="high", task="t.d"), now=1010.0)  # id-4 moved meanwhile
    assert store.remove_many(odd[:4]) == [1, 1, 1, 1]
    assert store.stats().by_queue_and_task == {("high", "t.d"): 1}
    assert store.remove_many([odd[4]], unchanged=False) == [1]  # the stored one's field
    assert store.stats().by_queue_and_task == {} and store.client.hlen(store.keys[2]) == 0


def test_filters(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    store.add(_entry(1, 1.0, queue="high", task="t.a"), now=2.0)
    store.add(_entry(2, 2.0, queue="high", task="t.b"), now=2.0)
    store.add(_entry(3, 3.0, queue="low", task="t.a"), now=3.0)
    assert [e.id for e in store.iter_entries(queue="high")] == ["id-2", "id-1"]
    assert [e.id for e in store.iter_entries(task="t.a", newest_first=False)] == ["id-1", "id-3"]
