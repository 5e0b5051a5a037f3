"""The task base classes application developers build on.

| class            | queue       | retries | first retry ≤ | retry cap | time limit (soft/hard) |
|------------------|-------------|---------|---------------|-----------|------------------------|
| BaseTask         | app default | 0       | -             | -         | pool's                 |
| RetryableTask    | app default | 5       | 2 s           | 600 s     | pool's                 |
| CriticalTask     | critical    | 10      | 0.5 s         | 60 s      | 20 s / 30 s            |
| LongRunningTask  | low         | 3       | 30 s          | 900 s     | 1500 s / 1800 s        |

"app default" is the app's ``task_default_queue`` (the catalogue's ``default_queue`` after
``worker_app.configure``). A worker run goes through the policy steps of
``worker_app.policies`` in a fixed order (idempotency, Redis-unavailable deferral, circuit
breaker, shared rate limit, retry, dead letter). Every final failure is written to the
dead-letter queue before the message is acknowledged. Retry delays are capped below the
broker's visibility timeout.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import redis
from celery import Task
from celery.exceptions import Ignore, Reject
from kombu.exceptions import OperationalError

from worker_app.backoff import clamp_countdown
from worker_app.configuration import settings_of
from worker_app.idempotency import default_key
from worker_app.policies import CONTROL_EXCEPTIONS, STEPS, Call, Step
from worker_app.settings import Settings
from worker_app.state_redis import state_client

__all__ = [
    "TRANSIENT_ERRORS",
    "BaseTask",
    "CircuitOpenError",
    "CriticalTask",
    "LongRunningTask",
    "NonRetryableError",
    "RetryableTask",
]

logger = logging.getLogger("worker_app.tasks")

#: Errors that are worth retrying by default: the other side was unreachable or slow.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
)

#: Celery's autoretry options, refused on our classes (they retry by their own policy), and
#: what to use instead.
REFUSED_OPTIONS: dict[str, str] = {
    "autoretry_for": (
        "Celery's autoretry would retry on top of worker_app's own retries (two retry "
        "mechanisms at once); list the exception types in retry_on instead"
    ),
    "dont_autoretry_for": "it belongs to Celery's autoretry; use non_retryable instead",
    "retry_kwargs": "it belongs to Celery's autoretry; set max_retries on the task instead",
    "retry_backoff": (
        "worker_app's classes call the ceiling of the first retry's delay backoff_first (seconds)"
    ),
    "retry_backoff_max": (
        "worker_app's classes call the cap of every retry's delay backoff_max (seconds)"
    ),
    "retry_jitter": (
        "worker_app's retries always use full jitter in [0, the backoff ceiling]; "
        "set backoff_first and backoff_max instead"
    ),
}


def _refuse_celery_retry_options(cls: type) -> None:
    """Raise ``TypeError`` when ``cls`` (or a class it inherits from) sets an option of
    Celery's autoretry."""
    for klass in cls.__mro__:
        if klass is Task or klass is object:
            continue
        for option, instead in REFUSED_OPTIONS.items():
            if option in vars(klass):
                name = vars(cls).get("name") or cls.__qualname__
                raise TypeError(f"task {name!r} sets {option}: {instead}")


class NonRetryableError(Exception):
    """Raise (or subclass) this to send a task to the DLQ without retrying."""


class CircuitOpenError(Exception):
    """The task's circuit breaker is open: the protected service is failing."""


class BaseTask(Task):  # type: ignore[misc]  # Celery's Task is untyped
    """JSON-logged task whose final failure is dead-lettered before the ack.

    Class attributes a subclass may set (also as ``@app.task(...)`` options):

    - ``queue``: a queue of the pool catalogue (default: the app's default queue);
    - ``retry_on``: exception types retried with backoff (none here);
    - ``non_retryable``: exception types never retried;
    - ``backoff_first`` / ``backoff_max``: ceiling of the first retry's delay and cap of
      every retry's delay (seconds); Celery's autoretry options (``autoretry_for``,
      ``dont_autoretry_for``, ``retry_kwargs``, ``retry_backoff``, ``retry_backoff_max``,
      ``retry_jitter``) are refused with a ``TypeError`` naming what to use instead;
    - ``idempotent`` / ``idempotency_ttl``: skip a call whose key already completed;
    - ``circuit_breaker`` (a name) / ``breaker_fail_max`` / ``breaker_reset_timeout``;
    - ``shared_rate_limit``: e.g. ``"10/s"``, shared by every worker;
    - ``steps``: the policy steps of a worker run (``worker_app.policies``).
    """

    Request = "worker_app.dlq.request:DeadLetterRequest"
    acks_late = True
    reject_on_worker_lost = True
    acks_on_failure_or_timeout = True
    queue: ClassVar[str | None] = None
    max_retries: ClassVar[int | None] = 0
    retry_on: ClassVar[tuple[type[BaseException], ...]] = ()
    non_retryable: ClassVar[tuple[type[BaseException], ...]] = (NonRetryableError,)
    backoff_first: ClassVar[float] = 1.0
    backoff_max: ClassVar[float] = 600.0
    idempotent: ClassVar[bool] = False
    idempotency_ttl: ClassVar[int] = 24 * 3600
    idempotency_busy_countdown: ClassVar[float] = 5.0
    circuit_breaker: ClassVar[str | None] = None
    breaker_fail_max: ClassVar[int] = 5
    breaker_reset_timeout: ClassVar[float] = 60.0
    breaker_exceptions: ClassVar[tuple[type[BaseException], ...]] = (Exception,)
    shared_rate_limit: ClassVar[str | None] = None
    rate_limit_inline_wait: ClassVar[float] = 1.0
    state_unavailable_countdown: ClassVar[float] = 5.0
    steps: ClassVar[tuple[Step, ...]] = STEPS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # ``@app.task(base=..., **options)`` creates a subclass with the options as class
        # attributes, so a refused option fails where the task is defined.
        super().__init_subclass__(**kwargs)
        _refuse_celery_retry_options(cls)

    @classmethod
    def on_bound(cls, app: Any) -> None:
        """Refuse Celery's autoretry options set by the app's ``task_annotations`` too."""
        super().on_bound(app)
        _refuse_celery_retry_options(cls)

    # -- configuration -------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """worker_app settings of the app this task is bound to."""
        return settings_of(self.app)

    @property
    def state_client(self) -> redis.Redis:
        """Redis for worker_app's own keys."""
        return state_client(self.settings)

    def idempotency_key(self, *args: Any, **kwargs: Any) -> str:
        """The dedup key of a call; override to dedup on a business id."""
        return default_key(self.name, args, kwargs)

    def on_soft_time_limit(self, *args: Any, **kwargs: Any) -> None:
        """Called when the soft time limit interrupts the task: clean up here.
        The task is dead-lettered afterwards."""

    # -- execution -----------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A worker run goes through ``steps`` (order and hooks: ``worker_app.policies``);
        a direct or eager call runs the task alone."""
        request = self.request
        if request.called_directly or request.is_eager:
            return self.run(*args, **kwargs)
        call = Call(self, args, kwargs)
        try:
            for step in self.steps:
                step.before_run(call)
            call.started = True
            result = self.run(*args, **kwargs)
        except CONTROL_EXCEPTIONS as stop:
            for step in self.steps:
                step.after_stop(call, stop)
            raise
        except Exception as exc:
            for step in self.steps:
                step.after_failure(call, exc)
            raise
        for step in reversed(self.steps):
            step.after_success(call, result)
        return result

    def retry(self, *args: Any, countdown: float | None = None, **kwargs: Any) -> Any:
        """Celery's ``retry`` with the delay capped below the visibility timeout."""
        limit = self.settings.max_countdown
        countdown = clamp_countdown(countdown, limit)
        eta = kwargs.get("eta")
        if eta is not None and countdown is None:
            kwargs["eta"] = None
            countdown = clamp_countdown(eta.timestamp() - time.time(), limit)
        try:
            return super().retry(*args, countdown=countdown, **kwargs)
        except Reject as reject:
            if reject.requeue:
                raise
            # Celery rejects *without* requeue when the retry cannot be published
            # (the broker is unreachable): the message would be dropped. Put it back
            # instead; it runs again (at least once) when the broker is back.
            logger.warning(
                "could not publish the retry of %s[%s] (%s); requeueing the message",
                self.name, self.request.id, reject.reason,
            )  # fmt: skip
            raise Reject(reject.reason, requeue=True) from reject

    def defer(self, countdown: float, why: str) -> None:
        """Publish this call again in ``countdown`` seconds without using a retry,
        then stop this run (the message is acknowledged)."""
        request = self.request
        countdown = clamp_countdown(countdown, self.settings.max_countdown) or 0.0
        logger.info("deferring %s[%s] %.2fs: %s", self.name, request.id, countdown, why)
        queue = (request.delivery_info or {}).get("routing_key") or self.queue
        try:
            self.apply_async(
                args=request.args,
                kwargs=request.kwargs,
                task_id=request.id,
                countdown=countdown,
                queue=queue,
                retries=request.retries,
            )
        except Exception as exc:
            # Not re-published: keep this message instead (an ack would lose the call).
            logger.warning("could not defer %s[%s] (%s); requeueing", self.name, request.id, exc)
            raise Reject(str(exc), requeue=True) from exc
        raise Ignore()


class RetryableTask(BaseTask):
    """Retries transient errors (connections, timeouts) with exponential backoff
    and full jitter; anything else, or exhaustion, goes to the DLQ."""

    max_retries = 5
    retry_on = TRANSIENT_ERRORS
    backoff_first = 2.0
    backoff_max = 600.0


class CriticalTask(RetryableTask):
    """User-facing work on the ``critical`` queue: more retries, faster first retry."""

    queue = "critical"
    max_retries = 10
    backoff_first = 0.5
    backoff_max = 60.0
    soft_time_limit = 20
    time_limit = 30


class LongRunningTask(RetryableTask):
    """Long work on the ``low`` pool: long limits; the soft limit calls
    ``on_soft_time_limit`` for cleanup, then the task is dead-lettered."""

    queue = "low"
    max_retries = 3
    backoff_first = 30.0
    backoff_max = 900.0
    soft_time_limit = 1500
    time_limit = 1800
