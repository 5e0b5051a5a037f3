"""The Redis client for worker_app's own keys (DLQ, idempotency, breakers, limits)."""

from __future__ import annotations

import os
import threading

import redis

_clients: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def client_for(url: str) -> redis.Redis:
    """A client for ``url``, one per process (a forked prefork child gets its own)."""
    key = (os.getpid(), url)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=10,
                socket_connect_timeout=5,
                health_check_interval=30,
                retry_on_timeout=True,
            )
            _clients[key] = client
        return client
