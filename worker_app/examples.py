"""Example tasks, one per base class, for the demo and the tests.

Load them on a worker with ``WORKER_APP_TASK_MODULES=worker_app.examples``.
Each records what it did in Redis (lists under ``<prefix>:examples:``) so a
test or a person can see the side effects.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery import shared_task

from worker_app.task_classes import (
    BaseTask,
    CriticalTask,
    LongRunningTask,
    NonRetryableError,
    RetryableTask,
)

# Celery's decorators are untyped; each use below carries the same ignore.
task = shared_task


def _record(task: BaseTask, kind: str, value: Any) -> None:
    key = f"{task.settings.key_prefix}:examples:{kind}"
    task.state_client.rpush(key, f"{time.time()!r} {value}")


def fix_upstream(client: redis.Redis, token: str, prefix: str = "worker_app") -> None:
    """Make ``examples.always_fails(token)`` succeed from now on."""
    client.set(f"{prefix}:examples:fixed:{token}", 1)


@task(base=RetryableTask, bind=True, name="examples.flaky", backoff_first=0.2)  # type: ignore[untyped-decorator]
def flaky(self: RetryableTask, token: str, fail_times: int) -> str:
    """Fails with ConnectionError ``fail_times`` times, then succeeds."""
    _record(self, f"attempts:{token}", self.request.retries)
    if self.request.retries < fail_times:
        raise ConnectionError(f"flaky service refused attempt {self.request.retries}")
    return f"ok after {self.request.retries} retries"


@task(base=RetryableTask, bind=True, name="examples.always_fails", max_retries=2, backoff_first=0.1)  # type: ignore[untyped-decorator]
def always_fails(self: RetryableTask, token: str) -> str:
    """Times out every time until the upstream is fixed (``fix_upstream``): ends in
    the DLQ after its retries; replayed after the fix, it succeeds."""
    _record(self, f"attempts:{token}", self.request.retries)
    if not self.state_client.exists(f"{self.settings.key_prefix}:examples:fixed:{token}"):
        raise TimeoutError(f"upstream timed out for {token}")
    _record(self, f"succeeded:{token}", self.request.retries)
    return token


@task(base=RetryableTask, bind=True, name="examples.invalid_input")  # type: ignore[untyped-decorator]
def invalid_input(self: RetryableTask, token: str) -> None:
    """Raises a non-retryable error: straight to the DLQ."""
    _record(self, f"attempts:{token}", self.request.retries)
    raise NonRetryableError(f"record {token} is malformed")


class _CleansUp(LongRunningTask):
    """A LongRunningTask whose soft-limit cleanup leaves a trace."""

    def on_soft_time_limit(self, *args: Any, **kwargs: Any) -> None:
        _record(self, f"cleanup:{args[0]}", "soft time limit")


@task(base=_CleansUp, bind=True, name="examples.slow", soft_time_limit=2, time_limit=10)  # type: ignore[untyped-decorator]
def slow(self: LongRunningTask, token: str, seconds: float) -> str:
    """Works for ``seconds`` (past its 2 s soft limit if asked to)."""
    _record(self, f"started:{token}", self.request.retries)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _record(self, f"finished:{token}", self.request.retries)
    return token


@task(base=RetryableTask, bind=True, name="examples.sleepy", max_retries=0)  # type: ignore[untyped-decorator]
def sleepy(self: RetryableTask, token: str, seconds: float) -> str:
    """Sleeps ``seconds`` (for crash tests: records the pid of its process)."""
    _record(self, f"started:{token}", self.request.retries)
    _record(self, f"pid:{token}", os.getpid())
    time.sleep(seconds)
    _record(self, f"finished:{token}", self.request.retries)
    return token


@task(base=RetryableTask, bind=True, name="examples.stubborn", max_retries=0)  # type: ignore[untyped-decorator]
def stubborn(self: RetryableTask, token: str, seconds: float) -> str:
    """Ignores the soft time limit (like code stuck in a C call): only the hard
    limit stops it."""
    _record(self, f"started:{token}", self.request.retries)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            _record(self, f"ignored_soft_limit:{token}", 1)
    _record(self, f"finished:{token}", self.request.retries)
    return token


@task(  # type: ignore[untyped-decorator]
    base=RetryableTask,
    bind=True,
    name="examples.idempotent_charge",
    idempotent=True,
    idempotency_busy_countdown=1.0,
)
def idempotent_charge(self: RetryableTask, order_id: str, cents: int) -> str:
    """Charges an order once, however often it is published."""
    _record(self, f"charged:{order_id}", cents)
    time.sleep(0.5)
    return order_id


@task(  # type: ignore[untyped-decorator]
    base=RetryableTask,
    bind=True,
    name="examples.guarded_call",
    circuit_breaker="examples-payments",
    breaker_fail_max=3,
    breaker_reset_timeout=3.0,
    max_retries=0,
)
def guarded_call(self: RetryableTask, token: str, succeed: bool) -> str:
    """Calls a 'service' behind a shared circuit breaker; fails unless ``succeed``."""
    _record(self, f"calls:{token}", f"{succeed} {self.request.hostname}")
    if not succeed:
        raise ConnectionError("payments service unreachable")
    return token


@task(base=CriticalTask, bind=True, name="examples.notify_user")  # type: ignore[untyped-decorator]
def notify_user(self: CriticalTask, user_id: int) -> int:
    """A fast critical-queue task."""
    _record(self, "notified", f"{user_id} {self.settings.pool or '-'}")
    return user_id


@task(base=BaseTask, bind=True, name="examples.record")  # type: ignore[untyped-decorator]
def record(self: BaseTask, token: str) -> str:
    """Records which pool and node ran it (for routing tests)."""
    _record(self, f"ran:{token}", f"{self.settings.pool or '-'} {self.request.hostname}")
    return token
