"""What the Redis broker holds: queued and unacked messages, and whole-database snapshots."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from worker_app.configuration import PRIORITY_SEP, PRIORITY_STEPS
from worker_app.pools import load_catalogue

# The queues of the default pool catalogue (worker_app/pools.yml).
QUEUE_NAMES = load_catalogue().queue_names

#: Kombu's Redis lists for one queue: the queue itself and its priority steps 3, 6, 9.
PRIORITY_SUFFIXES = ("", *(f"{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS[1:]))
#: A lock kombu's Redis transport takes (with an expiry) while restoring unacked messages.
TRANSIENT_KEYS = frozenset({b"unacked_mutex"})


def queued(client: redis.Redis) -> dict[str, int]:
    """Messages waiting per Redis list (only the non-empty ones)."""
    lengths = {}
    for queue in QUEUE_NAMES:
        for suffix in PRIORITY_SUFFIXES:
            length = int(client.llen(queue + suffix))
            if length:
                lengths[queue + suffix] = length
    return lengths


def unacked(client: redis.Redis) -> int:
    """Messages delivered to a worker and not yet acknowledged."""
    return int(client.hlen("unacked"))


def nothing_pending(client: redis.Redis) -> bool:
    """No message queued on any of the four queues and none unacknowledged."""
    return not queued(client) and unacked(client) == 0


def queued_bodies(client: redis.Redis, queue: str) -> list[tuple[dict[str, Any], Any]]:
    """``(headers, decoded body)`` of each message waiting on ``queue`` (oldest first)."""
    messages = []
    for suffix in PRIORITY_SUFFIXES:
        for raw in reversed(client.lrange(queue + suffix, 0, -1)):
            payload = json.loads(raw)
            body = base64.b64decode(payload["body"])
            messages.append((payload["headers"], json.loads(body)))
    return messages


def _value(client: redis.Redis, key: bytes) -> Any:
    kind = client.type(key)
    readers: dict[bytes, Any] = {
        b"string": lambda: client.get(key),
        b"list": lambda: client.lrange(key, 0, -1),
        b"hash": lambda: client.hgetall(key),
        b"set": lambda: client.smembers(key),
        b"zset": lambda: client.zrange(key, 0, -1, withscores=True),
    }
    if kind not in readers:
        raise AssertionError(f"snapshot cannot read {key!r} of type {kind!r}")
    return kind, readers[kind]()


def snapshot(client: redis.Redis) -> dict[bytes, Any]:
    """Every key of the database with its type and full contents, for an exact before/after
    comparison (by value: ``DUMP`` bytes of a large hash change as Redis rehashes it).
    Kombu's transient restore lock is left out."""
    keys = sorted(set(client.scan_iter(count=1000)) - TRANSIENT_KEYS)
    return {key: _value(client, key) for key in keys}
