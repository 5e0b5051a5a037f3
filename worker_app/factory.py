"""The bundled Celery app (``worker_app.app``): one caller of ``configure``, with the task
modules of ``WORKER_APP_TASK_MODULES``."""

from __future__ import annotations

import dataclasses
from typing import Any

from celery import Celery

from worker_app.configuration import configure, load_and_check, settings_of
from worker_app.pools import Catalogue
from worker_app.settings import Settings, SettingsError

__all__ = ["check_task_time_limits", "create_app", "load_and_check"]


def check_task_time_limits(app: Any, settings: Settings, catalogue: Catalogue) -> None:
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


def check_task_queues(app: Any, catalogue: Catalogue) -> None:
    """Refuse tasks that name a queue no pool of the catalogue consumes: their messages
    would wait on a key no worker reads."""
    queues = set(catalogue.queue_names)
    stranded = sorted(
        f"{name} (queue {task.queue!r})"
        for name, task in app.tasks.items()
        if isinstance(getattr(task, "queue", None), str) and task.queue not in queues
    )
    if stranded:
        raise SettingsError(
            f"tasks on queues no pool consumes (pools consume {', '.join(sorted(queues))}; "
            f"see worker-app pools): {', '.join(stranded)}"
        )


def create_app(settings: Settings | None = None) -> Celery:
    """The bundled app: ``configure`` on a new ``Celery("worker_app")`` with the settings of
    the environment (or ``settings``) and the task modules they name."""
    settings = settings or Settings.from_env()
    app = Celery("worker_app", include=list(settings.task_modules))
    fields = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}
    configure(app, **fields)
    return app


def pool_settings(app: Any, pool: str) -> Settings:
    """The app's settings for a worker of ``pool`` (set on the app)."""
    settings = dataclasses.replace(settings_of(app), pool=pool)
    app.worker_app_settings = settings
    return settings
