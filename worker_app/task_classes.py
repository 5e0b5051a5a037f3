"""The task base classes application developers build on.

| class            | queue    | retries | first retry ≤ | retry cap | time limit (soft/hard) |
|------------------|----------|---------|---------------|-----------|------------------------|
| BaseTask         | default  | 0       | -             | -         | pool's                 |
| RetryableTask    | default  | 5       | 2 s           | 600 s     | pool's                 |
| CriticalTask     | critical | 10      | 0.5 s         | 60 s      | 20 s / 30 s            |
| LongRunningTask  | low      | 3       | 30 s          | 900 s     | 1500 s / 1800 s        |

Every final failure is written to the dead-letter queue before the message is
acknowledged. Retry delays are capped below the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import socket
import time
from functools import cached_property
from typing import Any, ClassVar

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from kombu.exceptions import OperationalError

from worker_app.backoff import clamp_countdown, full_jitter
from worker_app.breaker import BreakerState, CircuitBreaker
from worker_app.dlq.capture import from_request
from worker_app.dlq.writer import dead_letter
from worker_app.events import breaker_state_changed, idempotent_skipped
from worker_app.idempotency import Claim, IdempotencyGuard, default_key
from worker_app.ratelimit import Rate, SharedRateLimit
from worker_app.settings import Settings
from worker_app.state_redis import client_for

logger = logging.getLogger("worker_app.tasks")

#: Errors that are worth retrying by default: the other side was unreachable or slow.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
)


class NonRetryableError(Exception):
    """Raise (or subclass) this to send a task to the DLQ without retrying."""


class CircuitOpenError(Exception):
    """The task's circuit breaker is open: the protected service is failing."""


class BaseTask(Task):  # type: ignore[misc]  # Celery's Task is untyped
    """JSON-logged task whose final failure is dead-lettered before the ack.

    Class attributes a subclass may set:

    - ``queue``: one of ``critical``, ``high``, ``default``, ``low``;
    - ``retry_on``: exception types retried with backoff (none here);
    - ``non_retryable``: exception types never retried;
    - ``retry_backoff`` / ``retry_backoff_max``: first-retry ceiling and cap (seconds);
    - ``idempotent`` / ``idempotency_ttl``: skip a call whose key already completed;
    - ``circuit_breaker`` (a name) / ``breaker_fail_max`` / ``breaker_reset_timeout``;
    - ``shared_rate_limit``: e.g. ``"10/s"``, shared by every worker.
    """

    Request = "worker_app.dlq.request:DeadLetterRequest"
    acks_late = True
    reject_on_worker_lost = True
    acks_on_failure_or_timeout = True
    queue: ClassVar[str] = "default"
    max_retries: ClassVar[int | None] = 0
    retry_on: ClassVar[tuple[type[BaseException], ...]] = ()
    non_retryable: ClassVar[tuple[type[BaseException], ...]] = (NonRetryableError,)
    retry_backoff: ClassVar[float] = 1.0
    retry_backoff_max: ClassVar[float] = 600.0
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

    # -- configuration -------------------------------------------------------
    @cached_property
    def settings(self) -> Settings:
        """Settings of the app this task is bound to."""
        settings = getattr(self.app, "worker_app_settings", None)
        return settings if isinstance(settings, Settings) else Settings.from_env()

    @property
    def state_client(self) -> redis.Redis:
        """Redis for worker_app's own keys."""
        return client_for(self.settings.state_redis_url)

    def idempotency_key(self, *args: Any, **kwargs: Any) -> str:
        """The dedup key of a call; override to dedup on a business id."""
        return default_key(self.name, args, kwargs)

    def on_soft_time_limit(self, *args: Any, **kwargs: Any) -> None:
        """Called when the soft time limit interrupts the task: clean up here.
        The task is dead-lettered afterwards."""

    # -- execution -----------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or request.is_eager:
            return self.run(*args, **kwargs)
        key: str | None = None
        started = False
        try:
            key = self._claim_idempotency(args, kwargs)
            self._check_breaker()
            self._wait_for_rate_limit()
            started = True
            result = self.run(*args, **kwargs)
        except (Retry, Ignore, Reject):
            self._release(key)
            raise
        except Exception as exc:
            self._release(key)
            if not started and isinstance(exc, redis.RedisError):
                # worker_app's own Redis failed before the task ran: nothing happened
                # yet, so run it later (an ack now would lose it).
                self.defer(
                    self.state_unavailable_countdown + full_jitter(0, 1.0, 1.0),
                    f"worker_app's Redis is unavailable ({type(exc).__name__}: {exc})",
                )
            self._guarded(self._record_breaker_failure, exc)
            if self._should_retry(exc):
                raise self._retry_with_backoff(exc) from exc
            if isinstance(exc, SoftTimeLimitExceeded):
                try:
                    self.on_soft_time_limit(*args, **kwargs)
                except Exception:
                    logger.exception("on_soft_time_limit failed")
            self._dead_letter(exc, args, kwargs)
            raise
        # The task has done its work: a failure of this bookkeeping must not fail it.
        self._guarded(self._record_breaker_success)
        if key is not None:
            self._guarded(self._guard().complete, key, request.id, self.idempotency_ttl)
        return result

    @staticmethod
    def _guarded(call: Any, *args: Any) -> None:
        """Run a bookkeeping call on worker_app's Redis; log (not raise) its failure."""
        try:
            call(*args)
        except redis.RedisError:
            logger.exception("bookkeeping on worker_app's Redis failed (%s)", call.__name__)

    # -- retries -------------------------------------------------------------
    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, self.non_retryable) or not isinstance(exc, self.retry_on):
            return False
        return self.max_retries is None or self.request.retries < self.max_retries

    def _retry_with_backoff(self, exc: BaseException) -> Retry:
        ceiling = min(self.retry_backoff_max, self.settings.max_countdown)
        countdown = full_jitter(self.request.retries, self.retry_backoff, ceiling)
        logger.warning(
            "retrying %s[%s] in %.3fs (retry %d of %s) after %s: %s",
            self.name,
            self.request.id,
            countdown,
            self.request.retries + 1,
            self.max_retries,
            type(exc).__name__,
            exc,
            extra={
                "retry_countdown": round(countdown, 3),
                "retry_number": self.request.retries + 1,
            },
        )
        return self.retry(exc=exc, countdown=countdown)

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

    # -- dead letters --------------------------------------------------------
    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, SoftTimeLimitExceeded):
            return "time_limit"
        if isinstance(exc, self.retry_on) and not isinstance(exc, self.non_retryable):
            return "retries_exhausted"
        return "non_retryable"

    def _dead_letter(self, exc: BaseException, args: Any, kwargs: Any) -> None:
        request = self.request
        entry = from_request(
            reason=self._reason(exc),
            task_name=self.name,
            task_id=request.id,
            args=args,
            kwargs=kwargs,
            headers=vars(request),
            delivery_info=request.delivery_info,
            retries=request.retries,
            exc=exc,
            hostname=request.hostname or socket.gethostname(),
        )
        try:
            dead_letter(entry, self.settings)
        except Exception as write_error:
            # Not stored: do not let the message be acknowledged. Requeue it so
            # the failure happens again later instead of vanishing.
            logger.exception("could not write DLQ entry for %s; requeueing", request.id)
            raise Reject(f"DLQ write failed: {write_error}", requeue=True) from exc

    # -- idempotency ---------------------------------------------------------
    def _guard(self) -> IdempotencyGuard:
        return IdempotencyGuard(self.state_client, self.settings.key_prefix)

    def _claim_idempotency(self, args: Any, kwargs: Any) -> str | None:
        if not self.idempotent:
            return None
        key = self.idempotency_key(*args, **kwargs)
        running_ttl = int((self.time_limit or self.settings.visibility_timeout) + 60)
        claim = self._guard().claim(key, self.request.id, running_ttl)
        if claim is Claim.DONE:
            logger.info(
                "skipping %s[%s]: idempotency key already completed",
                self.name,
                self.request.id,
                extra={"idempotency_key": key},
            )
            idempotent_skipped.send(sender=self.name, key=key, task_id=self.request.id)
            raise Ignore()
        if claim is Claim.BUSY:
            self.defer(self.idempotency_busy_countdown, "another run holds the idempotency key")
        return key

    def _release(self, key: str | None) -> None:
        if key is not None:
            try:
                self._guard().release(key, self.request.id)
            except redis.RedisError:
                logger.exception("could not release idempotency key %s", key)

    # -- circuit breaker -----------------------------------------------------
    def _breaker(self) -> CircuitBreaker | None:
        if not self.circuit_breaker:
            return None
        return CircuitBreaker(
            self.state_client,
            self.circuit_breaker,
            fail_max=self.breaker_fail_max,
            reset_timeout=self.breaker_reset_timeout,
            prefix=self.settings.key_prefix,
        )

    def _check_breaker(self) -> None:
        breaker = self._breaker()
        if breaker is None:
            return
        decision = breaker.allow()
        if decision.state is BreakerState.HALF_OPEN and decision.allowed:
            breaker_state_changed.send(sender=self.name, breaker=breaker.name, state="half_open")
        if not decision.allowed:
            exc = CircuitOpenError(
                f"circuit {breaker.name!r} is {decision.state.value}; retry in {decision.wait:.1f}s"
            )
            if self.max_retries is not None and self.request.retries >= self.max_retries:
                raise exc
            raise self.retry(exc=exc, countdown=decision.wait + full_jitter(0, 1.0, 1.0))

    def _record_breaker_failure(self, exc: BaseException) -> None:
        breaker = self._breaker()
        if breaker is None or isinstance(exc, CircuitOpenError):
            return
        if isinstance(exc, self.breaker_exceptions):
            state = breaker.record_failure()
            if state is BreakerState.OPEN:
                logger.warning("circuit %s is open", breaker.name)
                breaker_state_changed.send(sender=self.name, breaker=breaker.name, state="open")

    def _record_breaker_success(self) -> None:
        breaker = self._breaker()
        if breaker is not None and breaker.record_success() is not BreakerState.CLOSED:
            breaker_state_changed.send(sender=self.name, breaker=breaker.name, state="closed")

    # -- shared rate limit ---------------------------------------------------
    def _wait_for_rate_limit(self) -> None:
        if not self.shared_rate_limit:
            return
        limiter = SharedRateLimit(
            self.state_client,
            self.name,
            Rate.parse(self.shared_rate_limit),
            prefix=self.settings.key_prefix,
        )
        waited = 0.0
        while (wait := limiter.acquire()) > 0:
            if waited + wait > self.rate_limit_inline_wait:
                self.defer(wait, f"shared rate limit {self.shared_rate_limit}")
            time.sleep(wait)
            waited += wait


class RetryableTask(BaseTask):
    """Retries transient errors (connections, timeouts) with exponential backoff
    and full jitter; anything else, or exhaustion, goes to the DLQ."""

    max_retries = 5
    retry_on = TRANSIENT_ERRORS
    retry_backoff = 2.0
    retry_backoff_max = 600.0


class CriticalTask(RetryableTask):
    """User-facing work on the ``critical`` queue: more retries, faster first retry."""

    queue = "critical"
    max_retries = 10
    retry_backoff = 0.5
    retry_backoff_max = 60.0
    soft_time_limit = 20
    time_limit = 30


class LongRunningTask(RetryableTask):
    """Long work on the ``low`` pool: long limits; the soft limit calls
    ``on_soft_time_limit`` for cleanup, then the task is dead-lettered."""

    queue = "low"
    max_retries = 3
    retry_backoff = 30.0
    retry_backoff_max = 900.0
    soft_time_limit = 1500
    time_limit = 1800
