"""worker_app: the Celery application deployed on every host of the bundle.

``celery -A worker_app worker`` finds the application as ``worker_app.app``, created from
the environment on first access (importing the package creates nothing).
Task base classes: ``BaseTask``, ``RetryableTask``, ``CriticalTask``,
``LongRunningTask`` (see ``worker_app.task_classes`` for their policies).
"""

from __future__ import annotations

from typing import Any

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
    "create_app",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``worker_app.app``: the bundled app, created once, on first use."""
    if name == "app":
        created = create_app()
        globals()["app"] = created
        return created
    raise AttributeError(f"module 'worker_app' has no attribute {name!r}")
