"""worker_app: Celery on Redis that loses nothing, for any Celery app.

``worker_app.configure(app)`` gives the caller's own Celery app the bundle's settings,
transport, dead-letter queue, headers, size guard, metrics and logging. Task base classes:
``BaseTask``, ``RetryableTask``, ``CriticalTask``, ``LongRunningTask`` (see
``worker_app.task_classes``). ``worker_app.app`` is the bundled app (``celery -A worker_app``),
created from the environment on first access. Importing the package changes nothing: no app
is created, no transport swapped, no log handler touched.
"""

from __future__ import annotations

from typing import Any

from worker_app.configuration import configure, settings_of
from worker_app.factory import create_app
from worker_app.task_classes import (
    BaseTask,
    CircuitOpenError,
    CriticalTask,
    LongRunningTask,
    NonRetryableError,
    RetryableTask,
)

__all__ = [
    "BaseTask",
    "CircuitOpenError",
    "CriticalTask",
    "LongRunningTask",
    "NonRetryableError",
    "RetryableTask",
    "app",
    "configure",
    "create_app",
    "settings_of",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``worker_app.app``: the bundled app, created once, on first use."""
    if name == "app":
        created = create_app()
        globals()["app"] = created
        return created
    raise AttributeError(f"module 'worker_app' has no attribute {name!r}")
