"""The Celery application factory."""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker_app.queues import DEFAULT_QUEUE, celery_queues
from worker_app.settings import Settings

BUILTIN_TASK_MODULES: tuple[str, ...] = ("worker_app.tasks",)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for Redis as a broker that must not lose messages."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": celery_queues(),
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_exchange": DEFAULT_QUEUE,
        "task_default_routing_key": DEFAULT_QUEUE,
        "task_track_started": True,
        "enable_utc": True,
        "timezone": "UTC",
    }


def create_app(settings: Settings | None = None) -> Celery:
    """Create the Celery app with the bundle's configuration and task modules."""
    settings = settings or Settings.from_env()
    app = Celery("worker_app")
    app.conf.update(celery_config(settings))
    app.conf.include = [*BUILTIN_TASK_MODULES, *settings.task_modules]
    return app
