"""Message headers worker_app adds when a task is published."""

from __future__ import annotations

import time
from typing import Any

from celery import current_task

#: Wall-clock time of this publish (queue wait is measured from it).
PUBLISHED_AT = "worker_app_published_at"
#: Wall-clock time of the first publish of this task id (kept across retries).
FIRST_PUBLISHED_AT = "worker_app_first_published_at"
#: How many times ``dlq replay`` published this task again.
REPLAY_COUNT = "worker_app_replay_count"
#: The queue the task was published to (Redis delivery_info may lack it).
QUEUE = "worker_app_queue"


#: ``stamp_headers``'s default: look the running task up.
_RUNNING: Any = object()


def running_request() -> Any:
    """The request of the task running in this thread (None outside a task)."""
    running = current_task._get_current_object() if current_task else None
    return getattr(running, "request", None)


def stamp_headers(
    headers: dict[str, Any], routing_key: str | None, now: float | None = None,
    request: Any = _RUNNING,
) -> None:  # fmt: skip
    """Add publish-time headers in place (``before_task_publish`` calls this).

    A retry is a new publish of the same task id from inside the running task:
    it keeps the first publish time and the replay count of the original. ``request``: the
    running task's (``running_request()``), for a caller that publishes many at once.
    """
    now = time.time() if now is None else now
    headers[PUBLISHED_AT] = now
    if routing_key and QUEUE not in headers:
        headers[QUEUE] = routing_key
    if request is _RUNNING:
        request = running_request()
    if request is not None and getattr(request, "id", None) == headers.get("id"):
        for key in (FIRST_PUBLISHED_AT, REPLAY_COUNT):
            value = getattr(request, key, None)
            if value is not None and key not in headers:
                headers[key] = value
    headers.setdefault(FIRST_PUBLISHED_AT, now)
