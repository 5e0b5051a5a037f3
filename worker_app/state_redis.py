"""The Redis client for worker_app's own keys (DLQ, idempotency, breakers, limits).

A ``redis://`` URL gets a plain client; a ``sentinel://`` URL (kombu's format) a client of the
current master, found through the Sentinels, that follows a failover.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

from worker_app.sentinel import SentinelConfig, is_sentinel_url, master_client
from worker_app.settings import Settings, SettingsError

_clients: dict[tuple[int, str, SentinelConfig | None], redis.Redis] = {}
_lock = threading.Lock()

_CONNECTION: dict[str, Any] = {
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}


def client_for(url: str, sentinel: SentinelConfig | None = None) -> redis.Redis:
    """A client for ``url``, one per process (a forked prefork child gets its own).

    A ``sentinel://`` URL needs ``sentinel`` (the master name and the Sentinels'
    credentials; see :attr:`Settings.sentinel`)."""
    if is_sentinel_url(url):
        if sentinel is None:
            raise SettingsError(
                "WORKER_APP_SENTINEL_MASTER must name the Sentinel master (service) for a "
                "sentinel:// URL"
            )
    else:
        sentinel = None
    key = (os.getpid(), url, sentinel)
    with _lock:
        client = _clients.get(key)
        if client is None:
            if sentinel is not None:
                client = master_client(url, sentinel, **_CONNECTION)
            else:
                client = redis.Redis.from_url(url, **_CONNECTION)
            _clients[key] = client
        return client


def state_client(settings: Settings) -> redis.Redis:
    """The client for worker_app's own keys under ``settings``."""
    return client_for(settings.state_redis_url, settings.sentinel)


def broker_client(settings: Settings) -> redis.Redis:
    """A client for the broker's Redis under ``settings`` (its current master with Sentinel)."""
    return client_for(settings.broker_url, settings.sentinel)
