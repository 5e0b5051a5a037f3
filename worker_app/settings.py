"""Runtime settings read from the environment (one place, validated once)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker_app.sentinel import SentinelConfig, is_sentinel_url
from worker_app.tls import CERT_REQS, TLSConfig


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _csv(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be yes or no, got {raw!r}")


def _file(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name) or None
    if path is not None and not os.access(path, os.R_OK):
        raise SettingsError(f"{name} names {path!r}, which is no readable file")
    return path


def _tls(env: Mapping[str, str]) -> dict[str, Any]:
    cert_reqs = (env.get("WORKER_APP_REDIS_TLS_CERT_REQS") or "required").strip().lower()
    if cert_reqs not in CERT_REQS:
        raise SettingsError(
            f"WORKER_APP_REDIS_TLS_CERT_REQS must be one of {', '.join(CERT_REQS)}, "
            f"got {cert_reqs!r}"
        )
    cert_file = _file(env, "WORKER_APP_REDIS_TLS_CERT_FILE")
    key_file = _file(env, "WORKER_APP_REDIS_TLS_KEY_FILE")
    if key_file and not cert_file:
        raise SettingsError(
            "WORKER_APP_REDIS_TLS_KEY_FILE needs WORKER_APP_REDIS_TLS_CERT_FILE (the client "
            "certificate of that key)"
        )
    return {
        "redis_tls_ca_file": _file(env, "WORKER_APP_REDIS_TLS_CA_FILE"),
        "redis_tls_cert_file": cert_file,
        "redis_tls_key_file": key_file,
        "redis_tls_cert_reqs": cert_reqs,
        "redis_tls_check_hostname": _bool(env, "WORKER_APP_REDIS_TLS_CHECK_HOSTNAME", True),
    }


@dataclass(frozen=True)
class Settings:
    """What a worker_app process needs to know about its environment.

    Every field has an environment variable (see ``from_env``); the README's
    configuration table lists them.
    """

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    # Redis for worker_app's own keys (DLQ, idempotency, breakers, rate limits);
    # the broker's Redis when unset, so the DLQ shares the broker's persistence.
    redis_url: str | None = None
    key_prefix: str = "worker_app"
    visibility_timeout: int = 3600
    # Longest hard time limit of any task on this broker (None: the longest pool's).
    # Lower it with the visibility timeout to get faster recovery after a worker crash.
    max_time_limit: int | None = None
    # Seconds a consumer may miss its heartbeat before a live one returns what it held to the
    # queues (worker_app.broker_transport): how soon a crashed worker's tasks run again.
    consumer_grace: int = 30
    task_modules: tuple[str, ...] = field(default_factory=tuple)
    # The pool catalogue (None: the package's worker_app/pools.yml).
    pools_file: str | None = None
    dlq_max_entries: int = 10_000
    dlq_max_age: int = 180 * 24 * 3600
    death_handlers: tuple[str, ...] = field(default_factory=tuple)
    log_format: str = "json"
    pool: str = ""
    maintenance_interval: int = 300
    # Largest serialized task body a producer may publish (see worker_app.message_size).
    max_message_bytes: int = 1024 * 1024
    # Redis Sentinel (a ``sentinel://`` broker URL): the master (service) name, and the
    # credentials of the Sentinels themselves (the URL's are the data nodes').
    sentinel_master: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    # Whether the Sentinels and the data nodes they name are reached over TLS (verified as the
    # redis_tls_* fields say): a sentinel:// URL has no TLS scheme of its own.
    sentinel_tls: bool = False
    # A publish returns only once this many replicas have the message (Redis WAIT; 0: off),
    # waiting at most this long (ms) before it raises.
    publish_min_replicas: int = 0
    publish_replica_timeout_ms: int = 1000
    # TLS for rediss:// URLs (worker_app.tls): the CA that signs the servers' certificates (None:
    # the system's CA store), the client certificate and key (servers with tls-auth-clients),
    # whether the server's certificate is verified (required; none only when set so) and its
    # name checked against the URL's host.
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None
    redis_tls_cert_reqs: str = "required"
    redis_tls_check_hostname: bool = True

    @property
    def tls(self) -> TLSConfig:
        """The TLS of every ``rediss://`` connection of the process."""
        return TLSConfig(
            ca_file=self.redis_tls_ca_file,
            cert_file=self.redis_tls_cert_file,
            key_file=self.redis_tls_key_file,
            cert_reqs=self.redis_tls_cert_reqs,
            check_hostname=self.redis_tls_check_hostname,
        )

    @property
    def state_redis_url(self) -> str:
        """The Redis that holds worker_app's own keys."""
        return self.redis_url or self.broker_url

    @property
    def sentinel(self) -> SentinelConfig | None:
        """The Sentinel master and credentials (None: no master name is set)."""
        if not self.sentinel_master:
            return None
        return SentinelConfig(
            self.sentinel_master,
            self.sentinel_username,
            self.sentinel_password,
            tls=self.tls if self.sentinel_tls else None,
        )

    def check_sentinel(self, master_elsewhere: bool = False) -> None:
        """Refuse a ``sentinel://`` URL without a master name (``master_elsewhere``: the
        app's transport options name one)."""
        urls = [self.broker_url, self.state_redis_url]
        if any(is_sentinel_url(url) for url in urls) and not (
            self.sentinel_master or master_elsewhere
        ):
            raise SettingsError(
                "WORKER_APP_SENTINEL_MASTER must name the Sentinel master (service) when the "
                "broker URL is a sentinel:// URL (or set master_name in the app's "
                "broker_transport_options)"
            )

    @property
    def max_countdown(self) -> int:
        """Longest retry delay allowed: a delayed message waits unacked in Redis, so
        it must become due well before ``visibility_timeout`` re-delivers it."""
        return self.visibility_timeout // 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        source = os.environ if env is None else env
        log_format = source.get("WORKER_APP_LOG_FORMAT") or cls.log_format
        if log_format not in ("json", "text"):
            raise SettingsError(
                f"WORKER_APP_LOG_FORMAT must be 'json' or 'text', got {log_format!r}"
            )
        return cls(
            broker_url=source.get("CELERY_BROKER_URL") or cls.broker_url,
            result_backend=source.get("CELERY_RESULT_BACKEND") or None,
            redis_url=source.get("WORKER_APP_REDIS_URL") or None,
            key_prefix=source.get("WORKER_APP_KEY_PREFIX") or cls.key_prefix,
            visibility_timeout=_int(
                source, "WORKER_APP_VISIBILITY_TIMEOUT", cls.visibility_timeout, minimum=60
            ),
            max_time_limit=_int(source, "WORKER_APP_MAX_TIME_LIMIT", 0, minimum=10) or None,
            consumer_grace=_int(
                source, "WORKER_APP_CONSUMER_GRACE", cls.consumer_grace, minimum=10
            ),
            task_modules=_csv(source.get("WORKER_APP_TASK_MODULES")),
            pools_file=source.get("WORKER_APP_POOLS_FILE") or None,
            dlq_max_entries=_int(
                source, "WORKER_APP_DLQ_MAX_ENTRIES", cls.dlq_max_entries, minimum=1
            ),
            dlq_max_age=_int(source, "WORKER_APP_DLQ_MAX_AGE", cls.dlq_max_age, minimum=60),
            death_handlers=_csv(source.get("WORKER_APP_DEATH_HANDLERS")),
            log_format=log_format,
            pool=source.get("WORKER_APP_POOL", ""),
            maintenance_interval=_int(
                source, "WORKER_APP_MAINTENANCE_INTERVAL", cls.maintenance_interval, minimum=1
            ),
            max_message_bytes=_int(
                source, "WORKER_APP_MAX_MESSAGE_BYTES", cls.max_message_bytes, minimum=1024
            ),
            sentinel_master=source.get("WORKER_APP_SENTINEL_MASTER") or None,
            sentinel_username=source.get("WORKER_APP_SENTINEL_USERNAME") or None,
            sentinel_password=source.get("WORKER_APP_SENTINEL_PASSWORD") or None,
            sentinel_tls=_bool(source, "WORKER_APP_SENTINEL_TLS", cls.sentinel_tls),
            publish_min_replicas=_int(
                source, "WORKER_APP_PUBLISH_MIN_REPLICAS", cls.publish_min_replicas
            ),
            publish_replica_timeout_ms=_int(
                source,
                "WORKER_APP_PUBLISH_REPLICA_TIMEOUT_MS",
                cls.publish_replica_timeout_ms,
                minimum=1,
            ),
            **_tls(source),
        )
