"""The Celery application factory: the bundle's settings, queues and routing from the catalogue."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from worker_app import broker_transport, json_logging
from worker_app.headers import stamp_headers
from worker_app.pools import Catalogue, load_catalogue
from worker_app.queues import celery_queues
from worker_app.settings import Settings, SettingsError

BUILTIN_TASK_MODULES: tuple[str, ...] = ("worker_app.tasks",)


def maintenance_schedule(interval: int, queue: str) -> dict[str, dict[str, Any]]:
    """Beat's housekeeping schedule (every ``interval`` seconds, on ``queue``)."""
    return {
        "trim-dead-letters": {
            "task": "worker_app.maintenance.trim_dlq",
            "schedule": float(interval),
            "options": {"queue": queue, "expires": max(1, interval - 10)},
        },
    }


class RouteByClass:
    """Route a task to the queue its class declares (``queue = "critical"``) when a pool of
    the catalogue consumes it; otherwise Celery's default queue applies."""

    def __init__(self, queues: tuple[str, ...]) -> None:
        self.queues = frozenset(queues)

    def __call__(
        self, name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any
    ) -> dict[str, str] | None:
        queue = getattr(task, "queue", None)
        if queue in self.queues:
            return {"queue": queue}
        return None


def celery_config(settings: Settings, catalogue: Catalogue) -> dict[str, Any]:
    """Celery settings for Redis as a broker that must not lose messages."""
    default_queue = catalogue.default_queue
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Deliver by priority within a queue: 0 (highest) .. 9, 4 steps.
            "queue_order_strategy": "priority",
            "priority_steps": [0, 3, 6, 9],
            "sep": ":",
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_channel_error_retry": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        # On a lost broker connection, stop the tasks that run: their acks cannot
        # reach Redis, so their messages come back anyway (visibility timeout), and
        # a task left running while the consumer reconnects has its time limits
        # fire late on a pool the worker no longer reads (found by `make chaos`).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": 1,
        "worker_consumer": "worker_app.dlq.consumer:DeadLetteringConsumer",
        "worker_hijack_root_logger": False,
        "task_queues": celery_queues(catalogue),
        "task_default_queue": default_queue,
        "task_default_exchange": default_queue,
        "task_default_routing_key": default_queue,
        "task_routes": (RouteByClass(catalogue.queue_names),),
        "task_track_started": True,
        "task_send_sent_event": True,
        "result_expires": 24 * 3600,
        "beat_schedule": maintenance_schedule(
            settings.maintenance_interval, catalogue.maintenance_queue
        ),
        "enable_utc": True,
        "timezone": "UTC",
    }


def load_and_check(settings: Settings) -> Catalogue:
    """The pool catalogue in effect, checked against the visibility timeout: a message
    must not be delivered again while it still runs."""
    catalogue = load_catalogue(settings.pools_file)
    catalogue.check_visibility_timeout(settings.visibility_timeout, settings.max_time_limit)
    return catalogue


def check_task_time_limits(app: Celery, settings: Settings, catalogue: Catalogue) -> None:
    """Refuse tasks whose own hard time limit outlasts what the broker allows: their
    messages would be delivered a second time while the first run still works."""
    longest = catalogue.longest_time_limit(settings.max_time_limit)
    too_long = sorted(
        f"{name} ({task.time_limit}s)"
        for name, task in app.tasks.items()
        if getattr(task, "time_limit", None) and task.time_limit > longest
    )
    if too_long:
        raise SettingsError(
            f"task time limits above the longest allowed ({longest}s, see "
            f"WORKER_APP_MAX_TIME_LIMIT and WORKER_APP_VISIBILITY_TIMEOUT): {', '.join(too_long)}"
        )


def create_app(settings: Settings | None = None) -> Celery:
    """Create the Celery app with the bundle's configuration and task modules."""
    settings = settings or Settings.from_env()
    catalogue = load_and_check(settings)
    # redis:// is served by kombu's Redis transport with a consumer that cannot lose
    # a message it took (worker_app/broker_transport.py).
    broker_transport.install()
    app = Celery(
        "worker_app",
        include=[*BUILTIN_TASK_MODULES, *settings.task_modules],
        amqp="worker_app.amqp:GuardedAMQP",  # the message size guard
    )
    app.conf.update(celery_config(settings, catalogue))
    app.worker_app_settings = settings
    app.worker_app_catalogue = catalogue
    return app


@signals.before_task_publish.connect  # type: ignore[untyped-decorator]  # Celery is untyped
def _stamp_publish_headers(
    headers: dict[str, Any] | None = None, routing_key: str | None = None, **_: Any
) -> None:
    if headers is not None:
        stamp_headers(headers, routing_key)


@signals.setup_logging.connect  # type: ignore[untyped-decorator]  # Celery is untyped
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    settings = Settings.from_env()
    json_logging.configure(loglevel or "INFO", settings.log_format, settings.pool)
