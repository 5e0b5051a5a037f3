"""Consumer heartbeats (worker_app.broker_transport): a dead consumer's messages come back as
soon as its heartbeat is older than the grace period; a live consumer's never do, however long
it holds them. Against a real redis-server, through kombu with the transport."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from tests.support.redis_server import RedisServer
from worker_app.broker_transport import ReliableChannel

pytestmark = pytest.mark.integration

TRANSPORT = "worker_app.broker_transport:Transport"
REGISTRY = ReliableChannel.inflight_registry_key
RESTORED = ReliableChannel.inflight_restored_key
DEAD = ReliableChannel.inflight_dead_key


@pytest.fixture
def connect(redis_server: RedisServer) -> Iterator[Any]:
    opened: list[Connection] = []

    def open_one(**options: Any) -> Connection:
        conn = Connection(redis_server.url(0), transport=TRANSPORT, transport_options=options)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.release()


def _take(conn: Connection, queue: str) -> Any:
    """One message of ``queue`` taken through a named exchange (kombu's SimpleQueue) and left
    unacknowledged, as a worker holds a running or an ETA task."""
    simple = conn.SimpleQueue(queue)
    message = simple.get(block=True, timeout=5)
    assert message is not None
    return simple, message


def test_a_dead_consumers_unacked_messages_come_back_once_marked_redelivered(
    connect: Any, redis_server: RedisServer
) -> None:
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    producer = connect()
    producer.SimpleQueue(queue).put({"n": 1})
    producer.SimpleQueue(queue).put({"n": 2})
    holder = connect()
    _simple, first = _take(holder, queue)
    _simple2, second = _take(holder, queue)
    channel = holder.default_channel
    assert client.smembers(channel.owned_key) == {
        first.delivery_tag.encode(),
        second.delivery_tag.encode(),
    }
    second.ack()  # done before the crash: not returned
    assert client.smembers(channel.owned_key) == {first.delivery_tag.encode()}
    # The holder dies: its heartbeat stops (made old here).
    client.zadd(REGISTRY, {channel.inflight_key: time.time() - 120})
    sweeper = connect().default_channel
    assert sweeper.restore_orphans(time.time() - 30) == 1
    assert sweeper.restore_orphans(time.time() - 30) == 0  # once
    back = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    assert [json.loads(_body(m)) for m in back] == [{"n": 1}]
    assert back[0]["headers"]["redelivered"] is True
    assert client.hget("unacked", first.delivery_tag) is None
    assert client.zscore("unacked_index", first.delivery_tag) is None
    assert not client.exists(channel.owned_key, channel.inflight_key)
    assert client.zscore(REGISTRY, channel.inflight_key) is None
    assert client.hget(RESTORED, queue) == b"1"
    assert client.get(DEAD) == b"1"


def test_a_consumer_closing_returns_what_it_holds_and_leaves_the_registry(
    connect: Any, redis_server: RedisServer
) -> None:
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    dead_before = int(client.get(DEAD) or 0)
    holder = connect()
    _simple, message = _take(holder, queue)
    channel = holder.default_channel
    channel.heartbeat(time.time())
    assert client.zscore(REGISTRY, channel.inflight_key) is not None
    holder.release()  # a worker's warm shutdown closes its channel
    assert client.llen(queue) == 1  # the held message is back, once
    assert client.hget("unacked", message.delivery_tag) is None
    assert client.zscore(REGISTRY, channel.inflight_key) is None
    assert not client.exists(channel.owned_key)
    assert int(client.get(DEAD) or 0) == dead_before  # not a death


def test_a_live_consumers_messages_are_never_restored_however_old(
    connect: Any, redis_server: RedisServer
) -> None:
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    holder = connect(visibility_timeout=1)
    _simple, message = _take(holder, queue)
    channel = holder.default_channel
    channel.heartbeat(time.time())
    time.sleep(1.5)  # past the visibility timeout
    channel.heartbeat(time.time())  # alive: its messages' unacked timestamps move on
    other = connect(visibility_timeout=1).default_channel
    other.qos.restore_visible(interval=1)
    assert other.restore_orphans(time.time() - 30) == 0
    assert client.llen(queue) == 0
    assert client.hget("unacked", message.delivery_tag) is not None
    # Without heartbeats (a worker without this transport), the visibility timeout is the
    # backstop: the same message goes back.
    time.sleep(1.5)
    other.qos.restore_visible(interval=1)
    assert client.llen(queue) == 1


def _body(message: dict[str, Any]) -> str:
    import base64  # noqa: PLC0415

    body = message["body"]
    return base64.b64decode(body).decode() if message["properties"].get("body_encoding") else body
