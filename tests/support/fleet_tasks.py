"""Tasks both a stock Celery worker and a worker_app worker run (mixed-fleet tests): plain
``shared_task`` functions, so either app binds them. Each run is recorded in Redis by the
task id: runs per id, and the node that ran it."""

from __future__ import annotations

import time

import redis
from celery import shared_task

RUNS = "fleet:runs"
NODES = "fleet:nodes"


@shared_task(bind=True, name="fleet.work")  # type: ignore[untyped-decorator]
def work(self: object, seconds: float) -> None:
    """Sleep ``seconds``, recording the run (by task id) and the node that ran it."""
    request = self.request  # type: ignore[attr-defined]
    client = redis.Redis.from_url(self.app.conf.broker_url)  # type: ignore[attr-defined]
    with client:
        client.hincrby(RUNS, request.id, 1)
        client.hset(NODES, request.id, request.hostname)
        time.sleep(seconds)
