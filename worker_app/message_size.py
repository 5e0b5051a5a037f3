"""The size guard for task messages: big data belongs elsewhere, not in the broker.

Redis keeps every queued message in memory (and copies it to the unacked hash
while it runs), so one producer sending megabytes of arguments can push the
broker towards its memory limit. A producer built with ``create_app`` measures
each task body as it will be sent (serialized, compressed if configured) and
refuses to publish one larger than ``WORKER_APP_MAX_MESSAGE_BYTES``: the caller
gets :class:`MessageTooLargeError` and nothing is queued.

A retry (the running task publishing its own id again) is not measured: its
arguments are already in the system, and refusing it would lose the task.
"""

from __future__ import annotations

from typing import Any

from kombu.compression import compress
from kombu.serialization import dumps

SETTING = "WORKER_APP_MAX_MESSAGE_BYTES"

#: The ``embed`` part of a protocol 2 body when no callbacks or chain are attached.
EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class MessageTooLargeError(ValueError):
    """A task's message is larger than the configured limit; it was not published."""

    def __init__(self, task_name: str, size: int, limit: int) -> None:
        self.task_name = task_name
        self.size = size
        self.limit = limit
        super().__init__(
            f"task {task_name} not published: its message body is {size} bytes, over the "
            f"limit of {limit} bytes ({SETTING}); pass a reference to the data (a key, a "
            f"path, a URL) instead of the data itself, or raise {SETTING}"
        )


def body_size(body: Any, serializer: str, compression: str | None = None) -> int:
    """Bytes of ``body`` as a producer sends it (serialized, then compressed)."""
    _content_type, _encoding, data = dumps(body, serializer=serializer)
    return serialized_size(data, compression)


def serialized_size(data: str | bytes, compression: str | None = None) -> int:
    """Bytes of an already serialized body as a producer sends it (compressed if configured):
    a publish that serializes the body itself measures that string, not a second one."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if compression:
        raw, _ = compress(raw, compression)
    return len(raw)


def task_body(args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The protocol 2 body Celery builds for a plain call (no callbacks, no chain)."""
    return list(args or []), dict(kwargs or {}), dict(EMPTY_EMBED)


def check(task_name: str, size: int, limit: int) -> None:
    """Raise :class:`MessageTooLargeError` when ``size`` exceeds ``limit``."""
    if size > limit:
        raise MessageTooLargeError(task_name, size, limit)
