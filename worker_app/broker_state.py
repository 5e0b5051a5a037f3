"""What waits in the broker's Redis, read in one pipelined round trip (plus a bounded scan).

Per queue: its messages at each priority step (``LLEN``, O(1)), the unacked ones (taken by a
consumer, not yet acknowledged) and the scheduled ones among them (an ETA or countdown: on
Redis a worker holds those unacked until due), and how long the oldest waiting message has
waited (from worker_app's publish-time header). Also the consumer heartbeats that
``worker_app.broker_transport`` keeps. The unacked messages themselves are scanned only while
there are at most ``unacked_scan_limit`` of them, so a read's cost stays bounded. The broker
exporter and the console both read through here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from worker_app.headers import PUBLISHED_AT


@dataclass(frozen=True)
class QueueLayout:
    """How kombu's Redis transport names a queue's lists."""

    queues: tuple[str, ...]
    priority_steps: tuple[int, ...] = (0, 3, 6, 9)
    sep: str = "\x06\x16"
    global_keyprefix: str = ""
    unacked_key: str = "unacked"
    # Consumer heartbeats (worker_app.broker_transport): the registry, the restored counts,
    # and the grace period after which a silent consumer is dead.
    consumer_registry_key: str = "unacked_inflight"
    consumer_restored_key: str = "unacked_restored"
    consumer_dead_key: str = "unacked_dead_consumers"
    consumer_grace: float = 30.0

    def key(self, queue: str, step: int) -> str:
        """The list holding ``queue``'s messages of priority ``step``."""
        name = queue if step == self.priority_steps[0] else f"{queue}{self.sep}{step}"
        return self.global_keyprefix + name

    @classmethod
    def from_transport_options(cls, queues: Iterable[str], options: dict[str, Any]) -> QueueLayout:
        """The layout implied by Celery's ``broker_transport_options``."""
        return cls(
            queues=tuple(queues),
            priority_steps=tuple(sorted(options.get("priority_steps", (0, 3, 6, 9)))),
            sep=str(options.get("sep", "\x06\x16")),
            global_keyprefix=str(options.get("global_keyprefix", "")),
            unacked_key=str(options.get("unacked_key", "unacked")),
            consumer_grace=float(options.get("inflight_grace", 30.0)),
        )


@dataclass(frozen=True)
class ConsumerHeartbeats:
    """The consumer registry of worker_app's transport."""

    alive: int  # consuming channels whose heartbeat is within the grace period
    oldest_heartbeat_at: float | None  # the oldest registered heartbeat (None: none)
    restored: dict[str, int]  # messages returned from dead consumers, by queue
    died: int  # consumers found silent past the grace period


@dataclass(frozen=True)
class QueueState:
    """One queue of the layout."""

    name: str
    by_priority: dict[int, int]  # priority step -> messages waiting
    unacked: int | None  # None when the unacked scan was skipped
    scheduled: int | None  # unacked with an ETA/countdown; None when skipped
    oldest_wait: float | None  # seconds; None: nothing waits, or no publish time on it

    @property
    def waiting(self) -> int:
        """Messages waiting, all priority steps summed."""
        return sum(self.by_priority.values())


@dataclass(frozen=True)
class BrokerState:
    """Everything read at ``read_at``."""

    queues: dict[str, QueueState]  # the layout's queues, in order
    unacked_total: int
    # Unacked and scheduled by queue, including queues outside the layout ("unknown" for an
    # unreadable entry); None when there were more than the scan limit.
    unacked_by_queue: dict[str, int] | None
    scheduled_by_queue: dict[str, int] | None
    consumers: ConsumerHeartbeats
    read_at: float


def read_broker(
    client: redis.Redis,
    layout: QueueLayout,
    unacked_scan_limit: int = 10_000,
    *,
    oldest_wait: bool = False,
    now: float | None = None,
) -> BrokerState:
    """Read the broker's state (``oldest_wait`` also reads each list's oldest message)."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    cells = [(q, s) for q in layout.queues for s in layout.priority_steps]
    for queue, step in cells:
        pipe.llen(layout.key(queue, step))
    if oldest_wait:
        for queue, step in cells:
            pipe.lindex(layout.key(queue, step), -1)  # kombu LPUSHes and BRPOPs: the tail
    pipe.hlen(layout.global_keyprefix + layout.unacked_key)
    registry = layout.global_keyprefix + layout.consumer_registry_key
    pipe.zcount(registry, now - layout.consumer_grace, "+inf")
    pipe.zrange(registry, 0, 0, withscores=True)
    pipe.hgetall(layout.global_keyprefix + layout.consumer_restored_key)
    pipe.get(layout.global_keyprefix + layout.consumer_dead_key)
    results = pipe.execute()
    lengths = results[: len(cells)]
    tails = results[len(cells) : 2 * len(cells)] if oldest_wait else [None] * len(cells)
    unacked_total, alive, oldest, restored, dead = results[-5:]
    consumers = ConsumerHeartbeats(
        alive=int(alive),
        oldest_heartbeat_at=float(oldest[0][1]) if oldest else None,
        restored={queue.decode(): int(count) for queue, count in sorted(restored.items())},
        died=int(dead or 0),
    )
    unacked, scheduled = _scan_unacked(client, layout, int(unacked_total), unacked_scan_limit)
    queues: dict[str, QueueState] = {}
    for queue in layout.queues:
        queues[queue] = QueueState(queue, {}, None, None, None)
    waits: dict[str, list[float]] = {queue: [] for queue in layout.queues}
    for (queue, step), length, tail in zip(cells, lengths, tails, strict=True):
        queues[queue].by_priority[step] = int(length)
        published = _published_at(tail) if tail is not None else None
        if published is not None:
            waits[queue].append(max(0.0, now - published))
    for queue, state in queues.items():
        queues[queue] = QueueState(
            queue,
            state.by_priority,
            None if unacked is None else unacked.get(queue, 0),
            None if scheduled is None else scheduled.get(queue, 0),
            max(waits[queue]) if waits[queue] else None,
        )
    return BrokerState(queues, int(unacked_total), unacked, scheduled, consumers, now)


def _scan_unacked(
    client: redis.Redis, layout: QueueLayout, total: int, limit: int
) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """Unacked and scheduled messages by queue (None, None above ``limit``)."""
    if total > limit:
        return None, None
    per_queue: dict[str, int] = dict.fromkeys(layout.queues, 0)
    scheduled: dict[str, int] = dict.fromkeys(layout.queues, 0)
    key = layout.global_keyprefix + layout.unacked_key
    for _tag, raw in client.hscan_iter(key, count=1000):
        queue, has_eta = describe_unacked(raw)
        per_queue[queue] = per_queue.get(queue, 0) + 1
        if has_eta:
            scheduled[queue] = scheduled.get(queue, 0) + 1
    return per_queue, scheduled


def describe_unacked(raw: bytes) -> tuple[str, bool]:
    """(queue, has an ETA) of one entry of kombu's unacked hash."""
    try:
        payload, _exchange, routing_key = json.loads(raw)
        headers = payload.get("headers") or {}
        return str(routing_key or "unknown"), bool(headers.get("eta"))
    except (ValueError, TypeError, AttributeError):
        return "unknown", False


def _published_at(raw: bytes) -> float | None:
    """The publish time worker_app stamped on a waiting message (None without one)."""
    try:
        value = (json.loads(raw).get("headers") or {}).get(PUBLISHED_AT)
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None
