"""Stock Celery, as a team runs it before adopting the bundle: a plain ``celery.Celery`` on
kombu's own Redis transport, with the settings the bundle's guarantees share (late acks,
reject on worker lost, prefetch 1, the same priority steps and separator, the visibility
timeout from ``WORKER_APP_VISIBILITY_TIMEOUT``). Nothing of worker_app is installed in a process
that imports it: it is the worker without the new transport in a mixed fleet.

Start a worker with ``python -m celery -A tests.support.stock_celery worker -Q QUEUE``; the
task modules come from ``STOCK_CELERY_TASK_MODULES`` (comma-separated)."""

from __future__ import annotations

import os

from celery import Celery

from worker_app.configuration import PRIORITY_SEP, PRIORITY_STEPS

app = Celery("stock", set_as_current=True)
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("WORKER_APP_VISIBILITY_TIMEOUT", "3600")),
        "queue_order_strategy": "priority",
        "priority_steps": list(PRIORITY_STEPS),
        "sep": PRIORITY_SEP,
    },
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    imports=[name for name in os.environ.get("STOCK_CELERY_TASK_MODULES", "").split(",") if name],
)
