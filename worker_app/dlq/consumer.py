"""The worker's consumer with dead-lettering for messages that cannot run.

Celery drops (rejects or acks) a message whose task name is unknown, whose
body cannot be decoded, whose content type is refused (pickle) or that is not
a task message at all. Here each of them is written to the DLQ first; if that
write fails, the exception propagates, the consumer restarts and the message
stays unacknowledged, to be delivered again.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from worker_app.dlq.capture import from_message
from worker_app.dlq.writer import dead_letter
from worker_app.settings import Settings

logger = logging.getLogger("worker_app.dlq")


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]  # Celery is untyped
    """Celery's Consumer, dead-lettering what it would otherwise drop."""

    def _dead_letter(
        self, message: Any, reason: str, exc: BaseException | None, decoded: Any
    ) -> None:
        settings = getattr(self.app, "worker_app_settings", None) or Settings.from_env()
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
        self._dead_letter(message, "invalid_message", None, body)
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
