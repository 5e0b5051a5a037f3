"""Runtime settings read from the environment (one place, validated once)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
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


@dataclass(frozen=True)
class Settings:
    """What a worker_app process needs to know about its environment."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    visibility_timeout: int = 3600
    task_modules: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        source = dict(os.environ if env is None else env)
        return cls(
            broker_url=source.get("CELERY_BROKER_URL") or cls.broker_url,
            result_backend=source.get("CELERY_RESULT_BACKEND") or None,
            visibility_timeout=_int(
                source, "WORKER_APP_VISIBILITY_TIMEOUT", cls.visibility_timeout, minimum=60
            ),
            task_modules=_csv(source.get("WORKER_APP_TASK_MODULES")),
        )
