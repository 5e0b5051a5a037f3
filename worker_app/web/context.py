"""What the console's views work on: the DLQ store, the users, the Celery app, and what is
derived from the app (the pool catalogue, the broker's queue layout and client)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis
from flask import current_app

from worker_app.broker_state import QueueLayout
from worker_app.configuration import catalogue_of, settings_of
from worker_app.dlq.store import DeadLetterStore
from worker_app.pools import Catalogue
from worker_app.state_redis import broker_client
from worker_app.web.credential_cache import CredentialCache
from worker_app.web.users import User

EXTENSION = "worker_app_console"


@dataclass(frozen=True)
class Console:
    """The console's parts (one per Flask app, in ``app.extensions``); the derived ones are
    read on first use, so building a console connects to nothing."""

    store: DeadLetterStore
    users: dict[str, User]
    celery_app: Any
    flower_url: str | None = None
    control_timeout: float = 1.0  # seconds to wait for the workers' remote-control replies
    dlq_growth_window: float = 900.0  # seconds of dead letters /api/health counts
    dlq_growth_limit: int | None = None  # more entries than this in the window: unhealthy
    credentials: CredentialCache = field(default_factory=CredentialCache)  # API Basic auth

    @cached_property
    def catalogue(self) -> Catalogue:
        """The pool catalogue of the Celery app (``WORKER_APP_POOLS_FILE``)."""
        return catalogue_of(self.celery_app)

    @cached_property
    def layout(self) -> QueueLayout:
        """The catalogue's queues as the app's transport names them in Redis."""
        options = self.celery_app.conf.broker_transport_options or {}
        return QueueLayout.from_transport_options(self.catalogue.queue_names, options)

    @cached_property
    def broker(self) -> redis.Redis:
        """A client for the broker's Redis."""
        return broker_client(settings_of(self.celery_app))


def console() -> Console:
    """The parts of the running console."""
    found: Console = current_app.extensions[EXTENSION]
    return found
