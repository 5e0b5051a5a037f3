"""The tasks the chaos run publishes: their side effects are the ledger it audits.

Every run of a task body increments ``chaos:runs[token]``. The side effect is
``chaos:effects[token]`` (+1 per application):

- ``chaos.work`` applies it every time its body gets that far: at least once,
  and more often after a crash re-runs it (the run counts these duplicates);
- ``chaos.work_idempotent`` has the idempotency guard (key = the token, so a
  duplicate publish is skipped) and applies its effect keyed by the token
  (one atomic script: ``HSETNX`` on the token, and +1 only when it was new),
  the way a payment API's idempotency key or a unique constraint does: a crash
  between the effect and the guard's completion re-runs the body, but the
  effect stays applied once (re-runs that reach it count in
  ``chaos:effect_repeats``).

``fail_times`` transient failures (ConnectionError, retried with backoff) come
before success; ``permanent`` raises NonRetryableError (straight to the DLQ).
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import Any

from celery import shared_task

from worker_app.configuration import settings_of
from worker_app.state_redis import state_client
from worker_app.task_classes import NonRetryableError, RetryableTask

RUNS = "chaos:runs"
EFFECTS = "chaos:effects"
APPLIED = "chaos:applied"
EFFECT_REPEATS = "chaos:effect_repeats"

# KEYS: applied, effects, repeats; ARGV: token, task id -> 1 if applied now
_APPLY_ONCE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return 1
end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return 0
"""


class ChaosTask(RetryableTask):
    """Retries quickly and often: crashes and a Redis restart add failed attempts."""

    abstract = True
    max_retries = 12
    backoff_first = 0.5
    backoff_max = 5.0


class IdempotentChaosTask(ChaosTask):
    """The same, deduplicated on the token."""

    abstract = True
    idempotent = True
    idempotency_busy_countdown = 1.0

    def idempotency_key(self, *args: Any, **kwargs: Any) -> str:
        """The token: a second publish of the same token is a duplicate."""
        return f"chaos:{args[0]}"


def _body(task: RetryableTask, token: str, fail_times: int, permanent: bool) -> None:
    client = task.state_client
    client.hincrby(RUNS, token, 1)
    if permanent:
        raise NonRetryableError(f"chaos permanent failure of {token}")
    if task.request.retries < fail_times:
        raise ConnectionError(f"chaos transient failure of {token} (try {task.request.retries})")
    time.sleep(random.uniform(0.005, 0.03))


@shared_task(base=ChaosTask, bind=True, name="chaos.work")  # type: ignore[untyped-decorator]
def work(self: ChaosTask, token: str, fail_times: int, permanent: bool) -> str:
    """Applies its side effect at least once."""
    _body(self, token, fail_times, permanent)
    self.state_client.hincrby(EFFECTS, token, 1)
    return token


@shared_task(base=IdempotentChaosTask, bind=True, name="chaos.work_idempotent")  # type: ignore[untyped-decorator]
def work_idempotent(self: IdempotentChaosTask, token: str, fail_times: int, permanent: bool) -> str:
    """Applies its side effect exactly once (keyed by the token)."""
    _body(self, token, fail_times, permanent)
    apply_once = self.state_client.register_script(_APPLY_ONCE)
    apply_once(keys=[APPLIED, EFFECTS, EFFECT_REPEATS], args=[token, self.request.id])
    return token


BEAT_TICKS = "chaos:beat:ticks"  # list: one JSON record per run of a tick
BEAT_TICK_RUNS = "chaos:beat:tick_runs"  # hash: task id -> runs


@shared_task(bind=True, name="chaos.beat_tick")  # type: ignore[untyped-decorator]
def beat_tick(self: Any, expires_after: float) -> None:
    """A Beat tick (tests/chaos/beat_failover.py): records when Beat published it (its
    ``expires`` header, which Celery makes absolute at send time, minus ``expires_after``, the
    entry's ``expires`` option), which Beat process sent it (``origin``: ``gen<pid>@host``), and
    counts its runs."""
    request = self.request
    expires = request.expires
    if isinstance(expires, str):
        sent = datetime.fromisoformat(expires).timestamp() - expires_after
    else:
        sent = float("nan")
    client = state_client(settings_of(self.app))
    record = {"id": request.id, "sent": sent, "origin": str(request.origin), "ran": time.time()}
    pipe = client.pipeline()
    pipe.hincrby(BEAT_TICK_RUNS, request.id, 1)
    pipe.rpush(BEAT_TICKS, json.dumps(record))
    pipe.execute()
