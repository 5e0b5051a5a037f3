"""JSON log lines with the running task's context (one object per line)."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from celery._state import get_current_task

# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON: time, level, logger, message, task context, extras."""

    def __init__(self, pool: str = "") -> None:
        super().__init__()
        self.pool = pool or os.environ.get("WORKER_APP_POOL", "")
        self.host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object, no newlines inside."""
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "host": self.host,
            "pid": record.process,
        }
        if self.pool:
            data["pool"] = self.pool
        task = get_current_task()
        request = getattr(task, "request", None) if task else None
        if request is not None and getattr(request, "id", None):
            delivery = getattr(request, "delivery_info", None) or {}
            data.update(
                task_id=request.id,
                task_name=task.name if task else None,
                queue=delivery.get("routing_key"),
                retries=getattr(request, "retries", 0),
            )
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class WorkerAppHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """worker_app's stderr handler (so a second ``configure`` replaces it, and only it)."""


def configure(loglevel: int | str = logging.INFO, log_format: str = "json", pool: str = "") -> None:
    """Send every log record to stderr, as JSON or as plain text, next to the handlers the
    host application installed (Django's, Sentry's): only worker_app's own earlier handler
    is replaced."""
    handler = WorkerAppHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(pool))
    else:
        handler.setFormatter(
            logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, WorkerAppHandler):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(loglevel)
