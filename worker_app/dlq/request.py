"""The worker-side request class of ``BaseTask``: dead-letters hard time limits.

A hard time limit kills the child process, so the task's own code never sees
it; the parent process writes the entry here, before Celery acknowledges.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request

from worker_app.dlq.capture import from_request
from worker_app.dlq.writer import dead_letter
from worker_app.events import time_limit_hit
from worker_app.settings import Settings

logger = logging.getLogger("worker_app.dlq")


class DeadLetterRequest(Request):  # type: ignore[misc]  # Celery is untyped
    """Celery's Request plus a DLQ entry on a hard time limit."""

    def on_timeout(self, soft: bool, timeout: float) -> Any:
        """Write the entry for a hard time limit, then let Celery ack as usual."""
        time_limit_hit.send(
            sender=self.name, task_id=self.id, hard=not soft, hostname=self.hostname
        )
        if not soft:
            settings = getattr(self.task.app, "worker_app_settings", None) or Settings.from_env()
            headers = dict(self.request_dict or {})
            try:
                entry = from_request(
                    reason="time_limit",
                    task_name=self.name,
                    task_id=self.id,
                    args=self.args,
                    kwargs=self.kwargs,
                    headers=headers,
                    delivery_info=self.delivery_info,
                    retries=int(headers.get("retries") or 0),
                    exc=TimeLimitExceeded(timeout),
                    hostname=self.hostname,
                )
                dead_letter(entry, settings)
            except Exception:
                logger.exception("could not write DLQ entry for hard time limit of %s", self.id)
        return super().on_timeout(soft, timeout)
