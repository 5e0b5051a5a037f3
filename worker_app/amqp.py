"""Celery's AMQP layer with the message size guard in front of every task publish.

Celery's ``before_task_publish`` signal cannot stop a publish (Celery logs and
swallows what its receivers raise), so the guard wraps ``send_task_message``,
the one function through which ``delay``, ``apply_async``, ``send_task`` and
retries publish.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from celery import current_task
from celery.app.amqp import AMQP

from worker_app.message_size import body_size, check
from worker_app.settings import Settings


def is_republish_of_running_task(headers: dict[str, Any]) -> bool:
    """Whether the task running here publishes its own id again (a retry)."""
    running = current_task._get_current_object() if current_task else None
    request = getattr(running, "request", None)
    task_id = getattr(request, "id", None)
    return task_id is not None and task_id == headers.get("id")


class GuardedAMQP(AMQP):  # type: ignore[misc]  # Celery is untyped
    """AMQP whose task sender refuses bodies over ``WORKER_APP_MAX_MESSAGE_BYTES``."""

    @cached_property
    def send_task_message(self) -> Callable[..., Any]:
        """Celery's sender, measuring each body first (nothing is sent when too large)."""
        send: Callable[..., Any] = self._create_task_sender()
        conf = self.app.conf

        def guarded(producer: Any, name: str, message: Any, **options: Any) -> Any:
            headers, _properties, body, _sent_event = message
            if not is_republish_of_running_task(headers):
                size = body_size(
                    body,
                    options.get("serializer") or conf.task_serializer,
                    options.get("compression") or conf.task_compression,
                )
                check(name, size, self.max_message_bytes)
            return send(producer, name, message, **options)

        return guarded

    @property
    def max_message_bytes(self) -> int:
        """The limit of the app's settings (the default when the app has none)."""
        settings = getattr(self.app, "worker_app_settings", None) or Settings()
        return settings.max_message_bytes
