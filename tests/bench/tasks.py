"""Tasks the benchmarks run: the same no-op on a plain Celery task and on RetryableTask."""

from __future__ import annotations

import time
from typing import Any

from celery import Task, shared_task

from worker_app.headers import PUBLISHED_AT
from worker_app.task_classes import RetryableTask


@shared_task(base=Task, name="bench.plain_noop", acks_late=True)  # type: ignore[untyped-decorator]
def plain_noop() -> None:
    """Does nothing, as a plain Celery task."""


@shared_task(base=RetryableTask, name="bench.instrumented_noop")  # type: ignore[untyped-decorator]
def instrumented_noop() -> None:
    """Does nothing, on RetryableTask (with every worker_app hook)."""


@shared_task(base=RetryableTask, bind=True, name="bench.wait_probe")  # type: ignore[untyped-decorator]
def wait_probe(self: Any) -> None:
    """Records how long it waited between publish and start (seconds) in Redis."""
    started = time.time()
    published = float(getattr(self.request, PUBLISHED_AT))
    self.state_client.rpush("bench:waits", repr(started - published))


@shared_task(name="bench.stamp_probe")  # type: ignore[untyped-decorator]
def stamp_probe(sent_at: float, key: str, broker_url: str) -> None:
    """Records how long after ``sent_at`` it started (seconds) under ``key``: a plain task,
    so stock Celery and worker_app workers run the same code."""
    import redis  # noqa: PLC0415

    started = time.time()
    with redis.Redis.from_url(broker_url) as client:
        client.rpush(key, repr(started - sent_at))
