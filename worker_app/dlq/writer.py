"""Write a dead-letter entry, then tell whoever listens (signal + death handlers)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from functools import cache
from typing import Any

from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore
from worker_app.events import task_dead_lettered
from worker_app.settings import Settings
from worker_app.state_redis import state_client

logger = logging.getLogger("worker_app.dlq")

DeathHandler = Callable[[DeadLetter], Any]


def store_for(settings: Settings) -> DeadLetterStore:
    """The DLQ store configured by ``settings``."""
    return DeadLetterStore(
        state_client(settings),
        prefix=settings.key_prefix,
        max_entries=settings.dlq_max_entries,
        max_age=settings.dlq_max_age,
    )


@cache
def _load_handler(path: str) -> DeathHandler:
    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        raise TypeError(f"death handler {path!r} is not callable")
    return handler  # type: ignore[no-any-return]


def dead_letter(entry: DeadLetter, settings: Settings) -> bool:
    """Store ``entry``; raises if it cannot be stored (the caller must then not ack).

    After the write, ``task_dead_lettered`` is sent and every death handler named
    in ``WORKER_APP_DEATH_HANDLERS`` is called; their errors are logged, never raised.
    Returns True when the entry id was new.
    """
    created = store_for(settings).add(entry)
    logger.error(
        "dead-lettered %s[%s]: %s (%s: %s)",
        entry.task_name or "(no task name)",
        entry.id,
        entry.reason,
        entry.exception_type,
        entry.exception_message,
        extra={"dlq_reason": entry.reason, "dlq_entry_id": entry.id},
    )
    try:
        task_dead_lettered.send(sender=entry.task_name, entry=entry, created=created)
    except Exception:
        logger.exception("a task_dead_lettered receiver failed")
    for path in settings.death_handlers:
        try:
            _load_handler(path)(entry)
        except Exception:
            logger.exception("death handler %s failed for %s", path, entry.id)
    return created
