"""A death handler for the tests: records each dead-lettered id in Redis."""

from __future__ import annotations

import os

import redis

from worker_app.dlq.entry import DeadLetter


def record_death(entry: DeadLetter) -> None:
    """Push ``entry.id`` onto ``test:deaths`` (the tests read it back)."""
    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    client.rpush("test:deaths", f"{entry.id} {entry.reason}")
