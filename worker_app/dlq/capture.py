"""Build dead-letter entries from a task's request or from a raw broker message."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import traceback as tb
from collections.abc import Mapping
from typing import Any

from worker_app.dlq.entry import DeadLetter
from worker_app.headers import FIRST_PUBLISHED_AT, PUBLISHED_AT, REPLAY_COUNT

#: Bodies larger than this are stored truncated (an undecodable body is only
#: kept for a person to look at; it cannot be replayed anyway).
RAW_BODY_LIMIT = 64 * 1024


#: Protocol 2 headers Celery puts on a task message; a request's other attributes are the
#: worker's own state, not headers.
CELERY_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps",
})  # fmt: skip
#: A header value longer than this (as JSON) is stored cut, with a mark.
HEADER_VALUE_LIMIT = 2000


def recorded_headers(source: Mapping[str, Any], *, all_keys: bool = False) -> dict[str, Any]:
    """The headers of ``source`` an entry keeps: Celery's and worker_app's (``all_keys``: every
    one, for a raw message), each JSON-safe and at most ``HEADER_VALUE_LIMIT`` long."""
    kept: dict[str, Any] = {}
    for key, raw in source.items():
        if not isinstance(key, str):
            continue
        if not (all_keys or key in CELERY_HEADERS or key.startswith("worker_app_")):
            continue
        value = raw
        try:
            text = json.dumps(raw)
        except (TypeError, ValueError):
            value = text = repr(raw)
        if len(text) > HEADER_VALUE_LIMIT:
            value = text[:HEADER_VALUE_LIMIT] + " [cut]"
        kept[key] = value
    return kept


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _int_or_zero(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def describe_exception(exc: BaseException | None) -> tuple[str | None, str | None, str | None]:
    """``(type, message, traceback)`` of ``exc`` for an entry."""
    if exc is None:
        return None, None, None
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    return kind, str(exc), text


def from_request(
    *,
    reason: str,
    task_name: str,
    task_id: str,
    args: Any,
    kwargs: Any,
    headers: Mapping[str, Any],
    delivery_info: Mapping[str, Any] | None,
    retries: int,
    exc: BaseException | None,
    hostname: str | None = None,
    traceback_text: str | None = None,
) -> DeadLetter:
    """An entry for a task that ran (or was about to run) and died."""
    exc_type, exc_message, exc_traceback = describe_exception(exc)
    delivery = delivery_info or {}
    first = _float_or_none(headers.get(FIRST_PUBLISHED_AT)) or _float_or_none(
        headers.get(PUBLISHED_AT)
    )
    return DeadLetter(
        id=task_id,
        reason=reason,
        task_name=task_name,
        task_id=task_id,
        queue=delivery.get("routing_key") or headers.get("worker_app_queue"),
        args=list(args or []),
        kwargs=dict(kwargs or {}),
        exception_type=exc_type,
        exception_message=exc_message,
        traceback=traceback_text or exc_traceback,
        retries=retries,
        first_published_at=first,
        failed_at=time.time(),
        hostname=hostname or socket.gethostname(),
        replay_count=_int_or_zero(headers.get(REPLAY_COUNT)),
        priority=delivery.get("priority"),
        headers=recorded_headers(headers),
    )


def from_message(
    message: Any,
    *,
    reason: str,
    exc: BaseException | None,
    decoded: Any = None,
    hostname: str | None = None,
) -> DeadLetter:
    """An entry for a raw kombu message the worker could not turn into a task run."""
    headers: Mapping[str, Any] = getattr(message, "headers", None) or {}
    delivery: Mapping[str, Any] = getattr(message, "delivery_info", None) or {}
    properties: Mapping[str, Any] = getattr(message, "properties", None) or {}
    raw = getattr(message, "body", b"")
    raw_bytes = raw if isinstance(raw, bytes) else str(raw).encode()
    task_id = headers.get("id") or (properties.get("correlation_id") if properties else None)
    entry_id = (
        task_id or "raw-" + hashlib.sha256(raw_bytes + repr(headers).encode()).hexdigest()[:32]
    )
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    raw_body: str | None = None
    if (
        isinstance(decoded, (list, tuple))
        and len(decoded) == 3  # protocol 2: (args, kwargs, embed)
        and isinstance(decoded[0], (list, tuple))
        and isinstance(decoded[1], dict)
    ):
        args, kwargs = list(decoded[0]), dict(decoded[1])
        try:
            json.dumps([args, kwargs])
        except (TypeError, ValueError):
            args, kwargs, raw_body = [], {}, raw_bytes[:RAW_BODY_LIMIT].decode(errors="replace")
    else:
        raw_body = raw_bytes[:RAW_BODY_LIMIT].decode(errors="replace")
    exc_type, exc_message, exc_traceback = describe_exception(exc)
    first = _float_or_none(headers.get(FIRST_PUBLISHED_AT)) or _float_or_none(
        headers.get(PUBLISHED_AT)
    )
    return DeadLetter(
        id=str(entry_id),
        reason=reason,
        task_name=headers.get("task"),
        task_id=task_id,
        queue=delivery.get("routing_key") or headers.get("worker_app_queue"),
        args=args,
        kwargs=kwargs,
        exception_type=exc_type,
        exception_message=exc_message,
        traceback=exc_traceback,
        retries=_int_or_zero(headers.get("retries")),
        first_published_at=first,
        failed_at=time.time(),
        hostname=hostname or socket.gethostname(),
        replay_count=_int_or_zero(headers.get(REPLAY_COUNT)),
        raw_body=raw_body,
        content_type=getattr(message, "content_type", None),
        priority=delivery.get("priority"),
        headers=recorded_headers(headers, all_keys=True),
    )
