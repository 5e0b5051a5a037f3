"""The worker's consumer with dead-lettering for messages that cannot run.

Celery drops (rejects or acks) a message whose task name is unknown, whose
body cannot be decoded, whose content type is refused (pickle) or that is not
a task message at all. Here each of them is written to the DLQ first; if that
write fails, the exception propagates, the consumer restarts and the message
stays unacknowledged, to be delivered again.

A message larger than ``WORKER_APP_MAX_MESSAGE_BYTES`` (published by a producer
without the size guard) is run like any other, with a warning naming its task,
id and size: refusing it now would lose it or copy the data into the DLQ, and
the broker has already paid for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.consumer.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from worker_app.configuration import settings_of
from worker_app.dlq.capture import from_message
from worker_app.dlq.writer import dead_letter
from worker_app.message_size import SETTING
from worker_app.settings import Settings

logger = logging.getLogger("worker_app.dlq")
consumer_logger = logging.getLogger("worker_app.consumer")


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]  # Celery is untyped
    """Celery's Consumer, dead-lettering what it would otherwise drop."""

    def _settings(self) -> Settings:
        return settings_of(self.app)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Celery's handler, with a warning for each oversized message first."""
        handle: Callable[[Any], Any] = super().create_task_handler(*args, **kwargs)
        limit = self._settings().max_message_bytes

        def on_task_received(message: Any) -> Any:
            body = getattr(message, "body", None)
            size = len(body) if isinstance(body, (bytes, str)) else 0
            if size > limit:
                headers = getattr(message, "headers", None) or {}
                consumer_logger.warning(
                    "oversized message: %s[%s] is %d bytes, over %s=%d; running it anyway "
                    "(its producer does not enforce the limit)",
                    headers.get("task"),
                    headers.get("id"),
                    size,
                    SETTING,
                    limit,
                    extra={
                        "task_name": headers.get("task"),
                        "task_id": headers.get("id"),
                        "message_bytes": size,
                        "max_message_bytes": limit,
                    },
                )
            return handle(message)

        return on_task_received

    def _dead_letter(
        self, message: Any, reason: str, exc: BaseException | None, decoded: Any
    ) -> None:
        settings = self._settings()
        entry = from_message(
            message, reason=reason, exc=exc, decoded=decoded, hostname=self.hostname
        )
        dead_letter(entry, settings)

    @staticmethod
    def _try_decode(message: Any) -> Any:
        try:
            return message.decode()
        except Exception:
            return None

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """Not a task message: dead-letter, then Celery rejects it."""
        exc = InvalidTaskError("not a Celery task message: it has no 'task' header")
        self._dead_letter(message, "invalid_message", exc, body)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        """No task of that name here: dead-letter (replayable once it exists)."""
        self._dead_letter(message, "unknown_task", exc, self._try_decode(message))
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        """Refused content type or malformed task message."""
        reason = "undecodable" if isinstance(exc, ContentDisallowed) else "invalid_message"
        self._dead_letter(message, reason, exc, None)
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        """The body's bytes do not decode."""
        self._dead_letter(message, "undecodable", exc, None)
        super().on_decode_error(message, exc)
