"""The RedBeat lock, seen from the broker exporter: is a Beat scheduling, and for how long yet.

RedBeat (``redbeat.RedBeatScheduler``, wired by ``worker_app.beat_scheduler``) keeps a lock key
in worker_app's state Redis; the Beat that holds it schedules, renews it every tick and releases
it when it stops gracefully. Every other Beat waits for it.

- ``worker_app_beat_lock_held``: 1 while the lock key exists, 0 when it does not.
- ``worker_app_beat_lock_ttl_seconds``: seconds before the lock expires unless renewed (0 when it
  is not held, -1 for a lock without expiry, which RedBeat never sets).

Both are exported only where RedBeat runs (its schedule key exists or the lock does): a
deployment on Celery's file scheduler exports neither, so an alert on ``held == 0`` stays silent
there. One pipelined round trip per scrape (PTTL, EXISTS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker_app.beat_scheduler import lock_key_of, schedule_key_of

logger = logging.getLogger("worker_app.exporter")


class BeatLockCollector(Collector):
    """``worker_app_beat_lock_held`` and ``worker_app_beat_lock_ttl_seconds``."""

    def __init__(self, client: redis.Redis, lock_key: str, schedule_key: str) -> None:
        self.client = client
        self.lock_key = lock_key
        self.schedule_key = schedule_key

    def collect(self) -> Iterator[Any]:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.pttl(self.lock_key)
            pipe.exists(self.schedule_key)
            pttl, schedule_exists = pipe.execute()
        except redis.RedisError as exc:
            # worker_app_exporter_broker_up (the broker collector) says Redis is unreachable.
            logger.warning("beat lock scrape failed: %s", exc)
            return
        pttl = int(pttl)
        held = pttl != -2  # -2: no such key; -1: no expiry
        if not held and not schedule_exists:
            return
        held_metric = GaugeMetricFamily(
            "worker_app_beat_lock_held",
            "1 while a Beat holds the RedBeat lock (the lock key exists), 0 when none does.",
            labels=["lock_key"],
        )
        held_metric.add_metric([self.lock_key], 1.0 if held else 0.0)
        yield held_metric
        ttl_metric = GaugeMetricFamily(
            "worker_app_beat_lock_ttl_seconds",
            "Seconds before the RedBeat lock expires unless its holder renews it "
            "(0 when not held, -1 without expiry).",
            labels=["lock_key"],
        )
        if not held:
            ttl = 0.0
        elif pttl == -1:
            ttl = -1.0
        else:
            ttl = pttl / 1000
        ttl_metric.add_metric([self.lock_key], ttl)
        yield ttl_metric


def beat_lock_collector(app: Any, client: redis.Redis) -> BeatLockCollector:
    """The collector for ``app``'s RedBeat lock, read through ``client`` (the state Redis)."""
    conf = app.conf
    return BeatLockCollector(client, lock_key_of(conf), schedule_key_of(conf))
