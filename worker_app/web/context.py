"""What the console's views work on: the DLQ store, the users and the Celery app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from worker_app.dlq.store import DeadLetterStore
from worker_app.web.users import User

EXTENSION = "worker_app_console"


@dataclass(frozen=True)
class Console:
    """The console's parts (one per Flask app, in ``app.extensions``)."""

    store: DeadLetterStore
    users: dict[str, User]
    celery_app: Any
    flower_url: str | None = None


def console() -> Console:
    """The parts of the running console."""
    found: Console = current_app.extensions[EXTENSION]
    return found
