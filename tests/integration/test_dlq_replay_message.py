"""A replayed task's message, byte for byte: ``ReplayPublisher`` (the bulk replay's fast path)
makes the message Celery's own path (``create_task_message`` + the guarded
``send_task_message``) makes for the same entry; only the delivery tag and the publish time
differ. Also: an entry too large stops its batch before anything of it is published."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import signals
from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr

from tests.support.broker import PRIORITY_SUFFIXES, QUEUE_NAMES
from tests.support.redis_server import RedisServer
from worker_app.configuration import _guard_publishes
from worker_app.dlq import replay as replay_module
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.replay import replay_batch, short_repr
from worker_app.dlq.store import DeadLetterStore
from worker_app.dlq.writer import store_for
from worker_app.factory import create_app
from worker_app.headers import FIRST_PUBLISHED_AT, PUBLISHED_AT
from worker_app.message_size import SETTING, MessageTooLargeError
from worker_app.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> dict[str, str]:
    """A host that replays (no worker runs in this module)."""
    return {"CELERY_BROKER_URL": redis_server.url(0), "WORKER_APP_LOG_FORMAT": "text"}


@pytest.fixture(scope="module")
def app(env: dict[str, str]) -> Any:
    """The replaying app."""
    return create_app(Settings.from_env(env))


@pytest.fixture(scope="module")
def store(env: dict[str, str]) -> DeadLetterStore:
    """The DLQ."""
    return store_for(Settings.from_env(env))


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The broker's database, emptied after each test."""
    client = redis_server.client(0)
    yield client
    client.flushdb()


def _entries() -> list[DeadLetter]:
    now = time.time()
    common: dict[str, Any] = {"reason": "retries_exhausted", "task_name": "billing.charge",
                              "failed_at": now}  # fmt: skip
    return [
        DeadLetter(id="plain", task_id="plain", queue="default", args=[1, 2.5, None, True],
                   **common),
        DeadLetter(id="strings", task_id="strings", queue="low", args=["order-7", "é\n'\""],
                   kwargs={"amount": 100, "note": "x"}, priority=6, replay_count=2,
                   first_published_at=now - 60, **common),
        DeadLetter(id="empty", task_id=None, queue=None, args=[], kwargs={}, priority=0,
                   **common),
        DeadLetter(id="long", task_id="long", queue="high", args=list(range(2000)),
                   kwargs={"nested": [[[[1]]]], "d": {"k": (1, 2)}}, priority=9, **common),
        DeadLetter(id="unknown", task_id="unknown", queue="critical", args=[[1, {"a": 2}]],
                   **{**common, "reason": "unknown_task", "task_name": "gone.task"}),
    ]  # fmt: skip


def _published(broker: redis.Redis) -> list[str]:
    """Every queued message, normalized: the delivery tag and publish time blanked (and the
    first publish time, when it is this publish's)."""
    found = []
    for queue in QUEUE_NAMES:
        for suffix in PRIORITY_SUFFIXES:
            for raw in reversed(broker.lrange(queue + suffix, 0, -1)):
                payload = json.loads(raw)
                payload["properties"]["delivery_tag"] = "-"
                headers = payload["headers"]
                if headers[FIRST_PUBLISHED_AT] == headers[PUBLISHED_AT]:  # a first publish
                    headers[FIRST_PUBLISHED_AT] = 0
                headers[PUBLISHED_AT] = 0
                found.append(f"{queue + suffix} {json.dumps(payload)}")
    return found


def _replay_each_way(
    app: Any, store: DeadLetterStore, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[str]]:
    entries = _entries()
    for entry in entries:
        store.add(entry)
    assert replay_batch(store, app, entries) == [1] * len(entries)
    fast = _published(broker)
    broker.flushdb()
    for entry in entries:
        store.add(entry)
    with monkeypatch.context() as patch:
        patch.setattr(replay_module, "_fast_path_applies", lambda _app: False)
        assert replay_batch(store, app, entries) == [1] * len(entries)
    return fast, _published(broker)


def test_the_fast_path_publishes_the_bytes_celery_would(
    app: Any, store: DeadLetterStore, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, celery = _replay_each_way(app, store, broker, monkeypatch)
    assert len(fast) == len(_entries())
    for mine, theirs in zip(fast, celery, strict=True):
        assert mine == theirs, _diff(mine, theirs)


def test_signal_receivers_see_and_may_change_the_message_as_with_celery(
    app: Any, store: DeadLetterStore, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []

    def before(sender: str, body: Any, headers: dict[str, Any], **_: Any) -> None:
        body[2]["callbacks"] = None if body[0] else []  # a receiver changing the body
        headers["stamped-by-receiver"] = True

    def after(sender: str, headers: dict[str, Any], routing_key: str, **_: Any) -> None:
        seen.append((sender, routing_key))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    try:
        fast, celery = _replay_each_way(app, store, broker, monkeypatch)
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    for mine, theirs in zip(fast, celery, strict=True):
        assert mine == theirs, _diff(mine, theirs)
    assert all('"stamped-by-receiver": true' in line for line in fast)
    assert len(seen) == 2 * len(_entries())


def test_an_entry_too_large_stops_its_batch_before_any_publish(
    app: Any, store: DeadLetterStore, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(app.amqp), "max_message_bytes", property(lambda _self: 2000))
    entries = _entries()
    for entry in entries:
        store.add(entry)
    with pytest.raises(MessageTooLargeError, match=SETTING):
        replay_batch(store, app, entries)  # "long" is over 2000 bytes, after two that fit
    assert _published(broker) == []
    assert {entry.id for entry in store.get_many([e.id for e in entries])} == {
        e.id for e in entries
    }


class StampingAMQP(AMQP):  # type: ignore[misc]  # Celery is untyped
    """An app's own AMQP class that adds a header to every task message."""

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(*args, **kwargs)
        message.headers["stamped-by-amqp-class"] = True
        return message


def test_an_amqp_class_that_changes_the_message_keeps_celerys_path(
    env: dict[str, str], store: DeadLetterStore, broker: redis.Redis
) -> None:
    app = create_app(Settings.from_env(env))
    app.amqp_cls = StampingAMQP
    app.__dict__.pop("amqp", None)
    _guard_publishes(app)
    assert isinstance(app.amqp, StampingAMQP) and not replay_module._fast_path_applies(app)
    entry = _entries()[0]
    store.add(entry)
    assert replay_batch(store, app, [entry]) == [1]
    (line,) = _published(broker)
    assert '"stamped-by-amqp-class": true' in line and '"worker_app_replay_count": 1' in line


@pytest.mark.parametrize(
    "value",
    [[], [1, -2, 3.25, float("inf"), None, True, False], list(range(400)), {}, (), (1,),
     ["a"], [[1]], {"a": 1}, [10**30], [1.0e-7]],
)  # fmt: skip
def test_short_repr_is_celerys_saferepr(value: Any) -> None:
    assert short_repr(value, 1024, 3) == saferepr(value, 1024, maxlevels=3)


def _diff(mine: str, theirs: str) -> str:
    """Where two normalized messages differ (key by key)."""
    mine_queue, mine_json = mine.split(" ", 1)
    their_queue, their_json = theirs.split(" ", 1)
    a, b = json.loads(mine_json), json.loads(their_json)
    lines = [f"queues {mine_queue} / {their_queue}"]
    for part in ("headers", "properties"):
        lines.append(f"{part} in the same order: {list(a[part]) == list(b[part])}")
        for key in {*a[part], *b[part]}:
            if a[part].get(key) != b[part].get(key):
                lines.append(f"{part}.{key}: {a[part].get(key)!r} != {b[part].get(key)!r}")
    for key in a:
        if key not in ("headers", "properties") and a[key] != b.get(key):
            lines.append(f"{key}: {a[key]!r} != {b.get(key)!r}")
    return "\n".join(lines)
