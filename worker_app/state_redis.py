"""The Redis client for worker_app's own keys (DLQ, idempotency, breakers, limits).

A ``redis://`` URL gets a plain client, a ``rediss://`` URL a TLS client verified as
``WORKER_APP_REDIS_TLS_*`` say (``worker_app.tls``); a ``sentinel://`` URL (kombu's format) a
client of the current master, found through the Sentinels, that follows a failover (over TLS
with ``WORKER_APP_SENTINEL_TLS``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

from worker_app.sentinel import SentinelConfig, SentinelURL, is_sentinel_url, master_client
from worker_app.settings import Settings, SettingsError
from worker_app.tls import TLSConfig, is_tls_url, refused

_clients: dict[tuple[int, str, SentinelConfig | None, TLSConfig | None], redis.Redis] = {}
_lock = threading.Lock()

_CONNECTION: dict[str, Any] = {
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}
# A check's connection to one Sentinel.
_SENTINEL: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}


def client_for(
    url: str, sentinel: SentinelConfig | None = None, tls: TLSConfig | None = None
) -> redis.Redis:
    """A client for ``url``, one per process (a forked prefork child gets its own).

    A ``sentinel://`` URL needs ``sentinel`` (the master name and the Sentinels'
    credentials; see :attr:`Settings.sentinel`); a ``rediss://`` URL is verified as ``tls``
    says (default: against the system's CA store, see :attr:`Settings.tls`)."""
    if is_sentinel_url(url):
        if sentinel is None:
            raise SettingsError(
                "WORKER_APP_SENTINEL_MASTER must name the Sentinel master (service) for a "
                "sentinel:// URL"
            )
    else:
        sentinel = None
    tls = (tls or TLSConfig()) if is_tls_url(url) else None
    key = (os.getpid(), url, sentinel, tls)
    with _lock:
        client = _clients.get(key)
        if client is None:
            if sentinel is not None:
                client = master_client(url, sentinel, **_CONNECTION)
            else:
                client = redis.Redis.from_url(
                    url, **_CONNECTION, **(tls.redis_kwargs() if tls else {})
                )
            _clients[key] = client
        return client


def state_client(settings: Settings) -> redis.Redis:
    """The client for worker_app's own keys under ``settings``."""
    return client_for(settings.state_redis_url, settings.sentinel, settings.tls)


def broker_client(settings: Settings) -> redis.Redis:
    """A client for the broker's Redis under ``settings`` (its current master with Sentinel)."""
    return client_for(settings.broker_url, settings.sentinel, settings.tls)


def check_tls(settings: Settings) -> None:
    """Connect to each ``rediss://`` Redis of ``settings`` (the broker's, worker_app's own) and
    raise :class:`worker_app.tls.TLSRefusedError` (one line) when its TLS handshake fails: a
    certificate nobody trusts does not become valid by retrying. Any other error (Redis down)
    passes: a worker waits for Redis. With ``WORKER_APP_SENTINEL_TLS`` a ``sentinel://`` URL's
    Sentinels, and the master they name, are checked the same way."""
    sentinel = settings.sentinel
    for url in dict.fromkeys((settings.broker_url, settings.state_redis_url)):
        if is_tls_url(url):
            _check(lambda url=url: client_for(url, None, settings.tls), url, settings.tls)
        elif is_sentinel_url(url) and sentinel is not None and sentinel.tls is not None:
            _check_sentinels(url, sentinel, sentinel.tls)


def _check(connect: Any, where: str, tls: TLSConfig) -> None:
    """Ping the client ``connect()`` returns; a failed TLS handshake with the Redis at
    ``where`` (a URL) becomes :class:`worker_app.tls.TLSRefusedError`."""
    try:
        connect().ping()
    except redis.RedisError as exc:
        error = refused(exc, where, tls)
        if error is not None:
            raise error from None


def _check_sentinels(url: str, sentinel: SentinelConfig, tls: TLSConfig) -> None:
    """Each Sentinel of ``url`` over TLS, then the master they name."""
    for host, port in SentinelURL.parse(url).sentinels:

        def to_sentinel(host: str = host, port: int = port) -> redis.Redis:
            return redis.Redis(host=host, port=port, **_SENTINEL, **sentinel.client_kwargs())

        _check(to_sentinel, f"rediss://{host}:{port}", tls)
    client = client_for(url, sentinel, tls)
    try:
        client.ping()
    except redis.RedisError as exc:
        try:
            pool: Any = client.connection_pool  # a SentinelConnectionPool
            host, port = pool.get_master_address()
        except redis.RedisError:
            return  # no master found: Sentinel's own trouble, not TLS (a worker waits)
        error = refused(exc, f"rediss://{host}:{port}", tls)
        if error is not None:
            raise error from None
