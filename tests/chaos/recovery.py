"""How long the messages a killed worker held wait before they are back on their queue.

A sampler reads kombu's ``unacked`` hash (the messages consumers took and have not
acknowledged) several times a second and notes when each delivery tag appears and goes. In
the chaos run each pool has one main process; a tag of queue Q that is still unacknowledged
when Q's main process is SIGKILLed was held by the dead process (a live main acknowledges
what its children finish): it leaves the hash when the transport returns it to the queue.
Its recovery time is that moment minus the kill (or minus its ETA, for a countdown due
later). It reads nothing but kombu's own keys, so the same measurement runs on any version of
the transport. Messages still in a consumer's in-flight list (taken, not yet unacknowledged:
two in 10,000 in `make chaos`) are not seen here.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from kombu.utils.json import loads

INTERVAL = 0.2
REGISTRY = "unacked_inflight"  # worker_app.broker_transport's consumer registry


def consumers_of(names: set[str], pids: set[int]) -> int:
    """How many of the registered consumers ``names`` (``unacked_inflight:host:pid:id``)
    belonged to the processes ``pids``."""
    return sum(1 for name in names if name.count(":") >= 3 and int(name.split(":")[2]) in pids)


@dataclass
class Held:
    queue: str
    first: float
    last: float
    due: float  # the ETA (relative, like first/last), or -inf without one
    gone: float | None = None


@dataclass
class UnackedSampler:
    """Samples ``unacked`` every ``INTERVAL`` s in a thread; times are ``clock()``'s."""

    client: redis.Redis
    clock: Any
    tags: dict[str, Held] = field(default_factory=dict)
    consumers: set[str] = field(default_factory=set)  # every consumer registered, by name
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while not self.stop.wait(INTERVAL):
            try:
                present = {tag.decode() for tag in self.client.hkeys("unacked")}
                self.consumers.update(n.decode() for n in self.client.zrange(REGISTRY, 0, -1))
                new = [tag for tag in present if tag not in self.tags]
                entries = self.client.hmget("unacked", new) if new else []
            except (redis.RedisError, OSError):
                continue
            now = self.clock()
            for tag, entry in zip(new, entries, strict=True):
                if entry is not None:
                    self.tags[tag] = _held(entry, now)
            for tag, held in self.tags.items():
                if tag in present:
                    held.last = now
                elif held.gone is None:
                    held.gone = now


def _held(entry: bytes, now: float) -> Held:
    payload, _exchange, routing_key = loads(entry.decode())
    eta = (payload.get("headers") or {}).get("eta")
    due = float("-inf")
    if eta:
        due = now + (datetime.fromisoformat(eta).timestamp() - time.time())
    return Held(queue=routing_key, first=now, last=now, due=due)


def recovery(tags: dict[str, Held], kills: list[dict[str, Any]]) -> dict[str, Any]:
    """Per main-process kill, how long the messages it held waited (the slowest of them),
    and their distribution: p50, p99, max."""
    mains = [kill for kill in kills if kill["kind"] == "main"]
    per_kill: dict[int, float] = {}
    waits: list[float] = []
    stranded = 0
    for held in tags.values():
        killed = next((n for n, kill in enumerate(mains) if kill["pool"] == held.queue
                       and held.first <= kill["at"] <= held.last), None)  # fmt: skip
        if killed is None:
            continue
        if held.gone is None:
            stranded += 1
            continue
        wait = max(0.0, held.gone - max(mains[killed]["at"], held.due))
        waits.append(wait)
        per_kill[killed] = max(per_kill.get(killed, 0.0), wait)
    slowest = sorted(per_kill.values())
    detail = [{"at": mains[n]["at"], "pool": mains[n]["pool"], "waited_s": round(wait, 1)}
              for n, wait in sorted(per_kill.items())]  # fmt: skip
    return {
        "main_kills": len(mains),
        "kills_holding_messages": len(slowest),
        "messages_held": len(waits),
        "still_held_at_end": stranded,
        "per_kill_s": _quantiles(slowest),
        "per_message_s": _quantiles(sorted(waits)),
        "kills": detail,
    }


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    p99 = values[0]
    if len(values) > 1:
        p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
    return {"p50": round(statistics.median(values), 1), "p99": round(p99, 1),
            "max": round(max(values), 1)}  # fmt: skip
