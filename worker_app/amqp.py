"""Celery's AMQP layer with the message size guard and worker_app's headers on every task
publish.

Celery's ``before_task_publish`` signal cannot stop a publish (Celery logs and swallows what
its receivers raise) and is process-wide, so the guard wraps ``send_task_message`` of the
configured app: the one function through which ``delay``, ``apply_async``, ``send_task`` and
retries publish.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from celery.app.amqp import AMQP

from worker_app.headers import running_request, stamp_headers
from worker_app.message_size import body_size, check


def is_republish_of_running_task(headers: dict[str, Any]) -> bool:
    """Whether the task running here publishes its own id again (a retry)."""
    task_id = getattr(running_request(), "id", None)
    return task_id is not None and task_id == headers.get("id")


def _queue_name(options: dict[str, Any]) -> str | None:
    """The queue a publish goes to, as far as its options name it."""
    queue = options.get("queue")
    name = queue if isinstance(queue, str) else getattr(queue, "name", None)
    return name or options.get("routing_key")


class GuardedSender:
    """Mixin for an AMQP class: the task sender stamps headers and refuses bodies over
    ``WORKER_APP_MAX_MESSAGE_BYTES`` (nothing is sent when too large)."""

    app: Any
    _create_task_sender: Callable[[], Callable[..., Any]]

    @cached_property
    def send_task_message(self) -> Callable[..., Any]:
        """Celery's sender, measuring each body first and stamping the headers."""
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
            stamp_headers(headers, _queue_name(options) or conf.task_default_queue)
            return send(producer, name, message, **options)

        return guarded

    @property
    def max_message_bytes(self) -> int:
        """The limit of the app's settings (the default when the app has none)."""
        from worker_app.configuration import settings_of  # noqa: PLC0415 - import cycle

        return settings_of(self.app).max_message_bytes


class GuardedAMQP(GuardedSender, AMQP):  # type: ignore[misc]  # Celery is untyped
    """Celery's AMQP with the guarded sender."""


def guarded_amqp_class(base: type) -> type:
    """``base`` (an app's AMQP class) with the guarded sender."""
    if issubclass(base, GuardedSender):
        return base
    if base is AMQP:
        return GuardedAMQP
    return type(f"Guarded{base.__name__}", (GuardedSender, base), {})
