"""Built-in tasks every worker carries: a ping and the Beat housekeeping."""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import shared_task

from worker_app.configuration import settings_of
from worker_app.dlq.writer import store_for

logger = logging.getLogger("worker_app.maintenance")


@shared_task(name="worker_app.ping")  # type: ignore[untyped-decorator]  # Celery is untyped
def ping() -> dict[str, str]:
    """Answer with the host that ran the task (a liveness probe through the broker)."""
    return {"pong": socket.gethostname()}


@shared_task(name="worker_app.maintenance.trim_dlq", ignore_result=True, bind=True)  # type: ignore[untyped-decorator]
def trim_dlq(self: Any) -> int:
    """Apply the DLQ's count and age caps (Beat runs this every few minutes)."""
    removed = store_for(settings_of(self.app)).trim()
    logger.info("trimmed %d dead-letter entries", removed, extra={"dlq_trimmed": removed})
    return removed
