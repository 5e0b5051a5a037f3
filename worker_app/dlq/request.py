"""The worker-side request class of ``BaseTask``: dead-letters hard time limits.

A hard time limit kills the child process, so the task's own code never sees
it; the parent process writes the entry here, before Celery acknowledges.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request

from worker_app.configuration import settings_of
from worker_app.dlq.capture import from_request
from worker_app.dlq.writer import dead_letter
from worker_app.events import time_limit_hit

logger = logging.getLogger("worker_app.dlq")


class DeadLetterRequest(Request):  # type: ignore[misc]  # Celery is untyped
    """Celery's Request plus a DLQ entry on a hard time limit."""

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> Any:
        """Celery's cancel (on a lost broker connection), plus disarming the job's time
        limits: the pool would otherwise fire them late, at a process that is already
        exiting, and the garbled reply crashed the worker ('Unrecoverable error:
        UnpicklingError' in `make chaos`). The message comes back anyway: its ack
        never reached Redis."""
        result = super().cancel(pool, signal, emit_retry=emit_retry)
        apply_result = self._apply_result() if self._apply_result is not None else None
        disarm = getattr(getattr(pool, "_pool", None), "on_timeout_cancel", None)
        if apply_result is not None and disarm is not None:
            disarm(apply_result)
        return result

    def on_timeout(self, soft: bool, timeout: float) -> Any:
        """Write the entry for a hard time limit, then let Celery ack as usual."""
        if getattr(self, "_already_cancelled", False):
            # A late timer of a run that was cancelled: not a time limit of the task.
            return super().on_timeout(soft, timeout)
        time_limit_hit.send(
            sender=self.name, task_id=self.id, hard=not soft, hostname=self.hostname
        )
        if not soft:
            settings = settings_of(self.task.app)
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
