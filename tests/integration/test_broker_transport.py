"""worker_app's Redis transport: a message a consumer took is never only in that consumer.

The deterministic form of what `make chaos` hit with kombu's own transport: a
worker's main process takes a message from Redis and dies before it reads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from tests.integration.conftest import StartWorker, records
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from worker_app.broker_transport import ReliableChannel

pytestmark = pytest.mark.integration

REGISTRY = ReliableChannel.inflight_registry_key


def _in_flight(state: redis.Redis, token: str) -> list[str]:
    """The in-flight lists holding a message whose args carry ``token``."""
    found = []
    for name in state.scan_iter(f"{REGISTRY}:*"):
        if name.endswith(b":owned"):  # a consumer's owned set, not its in-flight list
            continue
        if any(token.encode() in item for item in state.lrange(name, 0, -1)):
            found.append(name.decode())
    return found


def _queued(state: redis.Redis, queue: str, token: str) -> bool:
    return any(token.encode() in item for item in state.lrange(queue, 0, -1))


# A consumer that takes a message (its scan moves it into its in-flight list) and dies before
# it reads the reply: the process that Redis handed the message to is gone.
_DIES_HOLDING = """
import os, sys, time
import kombu
from worker_app import broker_transport

broker_transport.install()
conn = kombu.Connection(sys.argv[1])
consumer = kombu.Consumer(conn, [kombu.Queue("high")], callbacks=[lambda body, message: None])
consumer.consume()
conn.transport.cycle.on_poll_start()  # sends the scan; the reply is never read
time.sleep(1)
os._exit(9)
"""


def test_a_message_taken_by_a_consumer_that_dies_before_reading_it_comes_back(
    start_pool_worker: StartWorker, client_app: Any, state: redis.Redis,
    redis_server: RedisServer, tmp_path: Path,
) -> None:  # fmt: skip
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.record", args=[token], queue="high")
    script = tmp_path / "dies_holding.py"
    script.write_text(_DIES_HOLDING)
    subprocess.run([sys.executable, str(script), redis_server.url(0)], check=False, timeout=60)
    # Redis gave the message to the dead process: it is neither queued nor unacked.
    assert not _queued(state, "high", token)
    assert not any(token.encode() in v for v in state.hvals("unacked"))
    assert _in_flight(state, token), "the in-flight list keeps it after the process died"
    start_pool_worker("high", "--concurrency", "1", node="high-after@test")
    ran = wait_until(
        lambda: records(state, f"ran:{token}"), timeout=120, interval=0.5, what="the message back"
    )
    assert len(ran) == 1 and ran[0].endswith("high-after@test")
    assert _in_flight(state, token) == []


def test_messages_are_taken_in_priority_order(
    start_pool_worker: StartWorker, client_app: Any, state: redis.Redis
) -> None:
    tokens = {priority: uuid.uuid4().hex[:8] for priority in (9, 6, 3, 0)}
    for priority, token in tokens.items():  # lowest priority first
        client_app.send_task("examples.record", args=[token], queue="default", priority=priority)
    start_pool_worker("default", "--concurrency", "1", node="default-order@test")
    for token in tokens.values():
        wait_until(lambda t=token: records(state, f"ran:{t}"), what="every task")
    started = {
        priority: float(state.lrange(f"worker_app:examples:ran:{token}", 0, 0)[0].split()[0])
        for priority, token in tokens.items()
    }
    assert sorted(started, key=started.__getitem__) == [0, 3, 6, 9]


def _message(queue: str, priority: int, token: str) -> bytes:
    return json.dumps(
        {
            "body": token,
            "headers": {},
            "properties": {
                "priority": priority,
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": queue},
            },
        }
    ).encode()


def test_the_sweep_returns_a_dead_consumers_messages_and_spares_a_live_one(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client(0)
    queue = f"sweep-{uuid.uuid4().hex[:6]}"
    dead, alive = f"{REGISTRY}:dead-{queue}", f"{REGISTRY}:alive-{queue}"
    now = time.time()
    client.lpush(dead, _message(queue, 0, "first"), _message(queue, 6, "second"))
    client.lpush(alive, _message(queue, 0, "busy"))
    client.zadd(REGISTRY, {dead: now - 120, alive: now})
    transport = "worker_app.broker_transport:Transport"
    with Connection(
        redis_server.url(0), transport=transport, transport_options={"sep": ":"}
    ) as conn:
        assert conn.default_channel.restore_orphans(now - 30) == 2
    assert [json.loads(m)["body"] for m in client.lrange(queue, 0, -1)] == ["first"]
    assert [json.loads(m)["body"] for m in client.lrange(f"{queue}:6", 0, -1)] == ["second"]
    assert not client.exists(dead) and client.zscore(REGISTRY, dead) is None
    assert client.llen(alive) == 1 and client.zscore(REGISTRY, alive) == pytest.approx(now)
