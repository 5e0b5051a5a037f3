"""The policy steps every worker run of a worker_app task goes through, in a fixed order.

Each step is a small class with hooks (in the spirit of Dramatiq's middleware and Sidekiq's
server middleware); ``BaseTask.__call__`` is a loop over ``BaseTask.steps``:

1. ``IdempotencyStep`` (``idempotent = True``). Before: claim the key; skip a call whose key
   completed, defer one whose key another run holds. Success: mark the key done. Failure or
   stop: release the key.
2. ``StateUnavailableStep``. Failure: worker_app's Redis failed before the run, so defer the call.
3. ``CircuitBreakerStep`` (``circuit_breaker = "name"``). Before: while open, retry later without
   running. Success: record it (closes the breaker). Failure: record it (may open the breaker).
4. ``SharedRateLimitStep`` (``shared_rate_limit = "10/s"``). Before: take a slot; sleep a short
   wait, defer a long one.
5. ``RetryStep``. Failure: retry a ``retry_on`` error with backoff and full jitter.
6. ``DeadLetterStep``. Failure: ``on_soft_time_limit`` after a soft time limit, then the DLQ entry.

- ``before_run`` hooks run top to bottom, then the task's ``run``.
- ``after_failure`` hooks (an ``Exception`` from a ``before_run`` hook or from ``run``) run top to
  bottom, so cleanup comes before the decisions and the decisions in this precedence: defer,
  retry, dead letter. A hook decides by raising (Celery's ``Ignore``/``Retry``/``Reject``); the
  rest are then skipped. When none decides, the error propagates (Celery records the failure).
- ``after_stop`` hooks run top to bottom when Celery's ``Retry``, ``Ignore`` or ``Reject`` ended
  the call (raised by a step or by ``run``): only the idempotency key is released.
- ``after_success`` hooks run bottom to top, as middleware unwinds. Their work is bookkeeping on
  worker_app's Redis: a failure is logged, never raised (the task has done its work).

Every hook runs whether or not the step's ``before_run`` did, so each copes with that. Metrics
come from the signals the steps send (``worker_app.events``) and from Celery's own signals.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery.exceptions import Ignore, Reject, Retry

from worker_app.backoff import full_jitter
from worker_app.breaker import BreakerState, CircuitBreaker
from worker_app.dlq.capture import from_request
from worker_app.dlq.writer import dead_letter
from worker_app.events import breaker_state_changed, idempotent_skipped
from worker_app.idempotency import Claim, IdempotencyGuard
from worker_app.ratelimit import Rate, SharedRateLimit

if TYPE_CHECKING:
    from worker_app.task_classes import BaseTask

logger = logging.getLogger("worker_app.tasks")

#: Celery's exceptions that end a call on purpose: not failures of the task.
CONTROL_EXCEPTIONS: tuple[type[Exception], ...] = (Retry, Ignore, Reject)


@dataclass
class Call:
    """One worker run of a task, as the steps see it."""

    task: BaseTask
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: The task's ``run`` began (every ``before_run`` hook passed).
    started: bool = False
    #: The idempotency key this run holds (set by ``IdempotencyStep``).
    idempotency_key: str | None = None


class Step:
    """A policy step: every hook does nothing unless a subclass overrides it."""

    def before_run(self, call: Call) -> None:
        """Before the task's ``run``; raise to stop the call."""

    def after_success(self, call: Call, result: Any) -> None:
        """After ``run`` returned ``result``."""

    def after_failure(self, call: Call, exc: Exception) -> None:
        """After ``exc`` (from a ``before_run`` hook or ``run``); raise to decide the outcome."""

    def after_stop(self, call: Call, stop: Exception) -> None:
        """After Celery's ``Retry``, ``Ignore`` or ``Reject`` ended the call."""


def guarded(bookkeeping: Callable[..., Any], *args: Any) -> None:
    """Run a bookkeeping call on worker_app's Redis; log (not raise) its failure."""
    try:
        bookkeeping(*args)
    except redis.RedisError:
        logger.exception("bookkeeping on worker_app's Redis failed (%s)", bookkeeping.__name__)


class IdempotencyStep(Step):
    """``idempotent = True``: a call whose key completed is skipped; one whose key another run
    holds is deferred; the key is marked done after a success and released otherwise."""

    def before_run(self, call: Call) -> None:
        task = call.task
        if not task.idempotent:
            return
        key = task.idempotency_key(*call.args, **call.kwargs)
        running_ttl = int((task.time_limit or task.settings.visibility_timeout) + 60)
        claim = self._guard(task).claim(key, task.request.id, running_ttl)
        if claim is Claim.DONE:
            logger.info(
                "skipping %s[%s]: idempotency key already completed",
                task.name,
                task.request.id,
                extra={"idempotency_key": key},
            )
            idempotent_skipped.send(sender=task.name, key=key, task_id=task.request.id)
            raise Ignore()
        if claim is Claim.BUSY:
            task.defer(task.idempotency_busy_countdown, "another run holds the idempotency key")
        call.idempotency_key = key

    def after_success(self, call: Call, result: Any) -> None:
        task = call.task
        if call.idempotency_key is not None:
            guarded(
                self._guard(task).complete,
                call.idempotency_key,
                task.request.id,
                task.idempotency_ttl,
            )

    def after_failure(self, call: Call, exc: Exception) -> None:
        self._release(call)

    def after_stop(self, call: Call, stop: Exception) -> None:
        self._release(call)

    @staticmethod
    def _guard(task: BaseTask) -> IdempotencyGuard:
        return IdempotencyGuard(task.state_client, task.settings.key_prefix)

    def _release(self, call: Call) -> None:
        key = call.idempotency_key
        if key is not None:
            try:
                self._guard(call.task).release(key, call.task.request.id)
            except redis.RedisError:
                logger.exception("could not release idempotency key %s", key)


class StateUnavailableStep(Step):
    """worker_app's own Redis failed before the task ran: nothing happened yet, so the call
    is published again later (an ack now would lose it)."""

    def after_failure(self, call: Call, exc: Exception) -> None:
        if not call.started and isinstance(exc, redis.RedisError):
            task = call.task
            task.defer(
                task.state_unavailable_countdown + full_jitter(0, 1.0, 1.0),
                f"worker_app's Redis is unavailable ({type(exc).__name__}: {exc})",
            )


class CircuitBreakerStep(Step):
    """``circuit_breaker = "name"``: shared by every worker through Redis; while it is open the
    call is retried later (using its retry budget) without running."""

    def before_run(self, call: Call) -> None:
        task = call.task
        breaker = self._breaker(task)
        if breaker is None:
            return
        decision = breaker.allow()
        if decision.state is BreakerState.HALF_OPEN and decision.allowed:
            breaker_state_changed.send(sender=task.name, breaker=breaker.name, state="half_open")
        if not decision.allowed:
            from worker_app.task_classes import CircuitOpenError  # noqa: PLC0415  # import cycle

            exc = CircuitOpenError(
                f"circuit {breaker.name!r} is {decision.state.value}; retry in {decision.wait:.1f}s"
            )
            if task.max_retries is not None and task.request.retries >= task.max_retries:
                raise exc
            raise task.retry(exc=exc, countdown=decision.wait + full_jitter(0, 1.0, 1.0))

    def after_success(self, call: Call, result: Any) -> None:
        guarded(self.record_success, call.task)

    def after_failure(self, call: Call, exc: Exception) -> None:
        guarded(self.record_failure, call.task, exc)

    @staticmethod
    def _breaker(task: BaseTask) -> CircuitBreaker | None:
        if not task.circuit_breaker:
            return None
        return CircuitBreaker(
            task.state_client,
            task.circuit_breaker,
            fail_max=task.breaker_fail_max,
            reset_timeout=task.breaker_reset_timeout,
            prefix=task.settings.key_prefix,
        )

    def record_failure(self, task: BaseTask, exc: Exception) -> None:
        """Count a failure of the protected service (not the breaker's own refusal)."""
        from worker_app.task_classes import CircuitOpenError  # noqa: PLC0415  # import cycle

        breaker = self._breaker(task)
        if breaker is None or isinstance(exc, CircuitOpenError):
            return
        if isinstance(exc, task.breaker_exceptions):
            state = breaker.record_failure()
            if state is BreakerState.OPEN:
                logger.warning("circuit %s is open", breaker.name)
                breaker_state_changed.send(sender=task.name, breaker=breaker.name, state="open")

    def record_success(self, task: BaseTask) -> None:
        """Close the breaker after a success."""
        breaker = self._breaker(task)
        if breaker is not None and breaker.record_success() is not BreakerState.CLOSED:
            breaker_state_changed.send(sender=task.name, breaker=breaker.name, state="closed")


class SharedRateLimitStep(Step):
    """``shared_rate_limit = "10/s"``: one limit for every worker (GCRA on one Redis key).
    Waits up to ``rate_limit_inline_wait`` are slept; a longer one defers the call."""

    def before_run(self, call: Call) -> None:
        task = call.task
        if not task.shared_rate_limit:
            return
        limiter = SharedRateLimit(
            task.state_client,
            task.name,
            Rate.parse(task.shared_rate_limit),
            prefix=task.settings.key_prefix,
        )
        waited = 0.0
        while (wait := limiter.acquire()) > 0:
            if waited + wait > task.rate_limit_inline_wait:
                task.defer(wait, f"shared rate limit {task.shared_rate_limit}")
            time.sleep(wait)
            waited += wait


def retryable(task: BaseTask, exc: BaseException) -> bool:
    """Whether ``exc`` is one the task retries (``retry_on`` and not ``non_retryable``)."""
    return isinstance(exc, task.retry_on) and not isinstance(exc, task.non_retryable)


#: Shortest retry delay. Celery publishes a retry before it stores the failed run's RETRY
#: state, and the result backend's "never overwrite SUCCESS" check is read-then-write: a retry
#: that runs and succeeds within milliseconds can have its SUCCESS overwritten by RETRY, and
#: the result never becomes ready (seen in `make integration` with a 8 ms draw).
MIN_RETRY_DELAY = 0.25


class RetryStep(Step):
    """A ``retry_on`` error (not ``non_retryable``) is retried while retries remain, after a
    delay drawn from ``[0, min(backoff_max, backoff_first * 2**retries)]`` (full jitter), at
    least ``MIN_RETRY_DELAY``."""

    def after_failure(self, call: Call, exc: Exception) -> None:
        task = call.task
        if not retryable(task, exc):
            return
        if task.max_retries is None or task.request.retries < task.max_retries:
            raise self._retry(task, exc) from exc

    @staticmethod
    def _retry(task: BaseTask, exc: Exception) -> Any:
        request = task.request
        ceiling = min(task.backoff_max, task.settings.max_countdown)
        countdown = max(MIN_RETRY_DELAY, full_jitter(request.retries, task.backoff_first, ceiling))
        logger.warning(
            "retrying %s[%s] in %.3fs (retry %d of %s) after %s: %s",
            task.name,
            request.id,
            countdown,
            request.retries + 1,
            task.max_retries,
            type(exc).__name__,
            exc,
            extra={"retry_countdown": round(countdown, 3), "retry_number": request.retries + 1},
        )
        return task.retry(exc=exc, countdown=countdown)


class DeadLetterStep(Step):
    """A failure no step deferred or retried: ``on_soft_time_limit`` after a soft time limit,
    then the DLQ entry, written before the message is acknowledged (a failed write requeues
    the message instead)."""

    def after_failure(self, call: Call, exc: Exception) -> None:
        task = call.task
        if isinstance(exc, SoftTimeLimitExceeded):
            try:
                task.on_soft_time_limit(*call.args, **call.kwargs)
            except Exception:
                logger.exception("on_soft_time_limit failed")
        request = task.request
        entry = from_request(
            reason=self.reason(task, exc),
            task_name=task.name,
            task_id=request.id,
            args=call.args,
            kwargs=call.kwargs,
            headers=vars(request),
            delivery_info=request.delivery_info,
            retries=request.retries,
            exc=exc,
            hostname=request.hostname or socket.gethostname(),
        )
        try:
            dead_letter(entry, task.settings)
        except Exception as write_error:
            # Not stored: do not let the message be acknowledged. Requeue it so
            # the failure happens again later instead of vanishing.
            logger.exception("could not write DLQ entry for %s; requeueing", request.id)
            raise Reject(f"DLQ write failed: {write_error}", requeue=True) from exc

    @staticmethod
    def reason(task: BaseTask, exc: BaseException) -> str:
        """The DLQ reason of a final failure."""
        if isinstance(exc, SoftTimeLimitExceeded):
            return "time_limit"
        if retryable(task, exc):
            return "retries_exhausted"
        return "non_retryable"


#: The steps of ``BaseTask``, in their order.
STEPS: tuple[Step, ...] = (
    IdempotencyStep(),
    StateUnavailableStep(),
    CircuitBreakerStep(),
    SharedRateLimitStep(),
    RetryStep(),
    DeadLetterStep(),
)
