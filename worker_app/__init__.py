"""worker_app: the Celery application deployed on every host of the bundle.

``celery -A worker_app worker`` finds the application as ``worker_app.app``.
Task base classes: ``BaseTask``, ``RetryableTask``, ``CriticalTask``,
``LongRunningTask`` (see ``worker_app.task_classes`` for their policies).
"""

from __future__ import annotations

from worker_app.app import create_app
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

app = create_app()
