"""Built-in tasks every worker carries."""

from __future__ import annotations

import socket

from celery import shared_task


@shared_task(name="worker_app.ping")  # type: ignore[untyped-decorator]  # Celery is untyped
def ping() -> dict[str, str]:
    """Answer with the host that ran the task (a liveness probe through the broker)."""
    return {"pong": socket.gethostname()}
