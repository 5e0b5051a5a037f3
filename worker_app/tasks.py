"""Built-in tasks every worker carries: a ping and the Beat housekeeping."""

from __future__ import annotations

import logging
import socket

from celery import shared_task

from worker_app.dlq.writer import store_for
from worker_app.settings import Settings

logger = logging.getLogger("worker_app.maintenance")


@shared_task(name="worker_app.ping")  # type: ignore[untyped-decorator]  # Celery is untyped
def ping() -> dict[str, str]:
    """Answer with the host that ran the task (a liveness probe through the broker)."""
    return {"pong": socket.gethostname()}


@shared_task(name="worker_app.maintenance.trim_dlq", ignore_result=True)  # type: ignore[untyped-decorator]
def trim_dlq() -> int:
    """Apply the DLQ's count and age caps (Beat runs this every few minutes)."""
    removed = store_for(Settings.from_env()).trim()
    logger.info("trimmed %d dead-letter entries", removed, extra={"dlq_trimmed": removed})
    return removed
