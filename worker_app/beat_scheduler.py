"""Beat on several hosts, one scheduling: the wiring of RedBeat (``redbeat.RedBeatScheduler``).

``configure(app)`` calls ``configure_beat`` so that, when Beat runs with
``-S redbeat.RedBeatScheduler`` (on the command line or as ``beat_scheduler``), RedBeat

- keeps its schedule, its run state (each entry's ``last_run_at``) and its lock in worker_app's
  state Redis (``Settings.state_redis_url``), never in whatever ``broker_url`` happens to be;
- names its keys under worker_app's key prefix (which already carries kombu's
  ``global_keyprefix`` when the app sets one): ``<prefix>:redbeat:<entry>``,
  ``<prefix>:redbeat::schedule``, ``<prefix>:redbeat::lock``;
- holds a lock that expires ``lock_timeout`` seconds after the active Beat last renewed it, so a
  standby Beat takes over within ``takeover_bound`` seconds of the active one dying
  (``lock_timeout`` + one ``max_interval``: the standby retries the lock every ``max_interval``).

The keys are set whatever the scheduler (they are inert without RedBeat, and ``-S`` given on the
command line is not visible here); a value the user set in the app's configuration stays.
``beat_max_loop_interval`` is lowered to ``DEFAULT_MAX_LOOP_INTERVAL`` only where the user left
Celery's default (0, which means 300 s for a scheduler that is not lazy, RedBeat included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker_app.sentinel import is_sentinel_url, redbeat_options
from worker_app.settings import Settings
from worker_app.tls import is_tls_url

REDBEAT_SCHEDULER = "redbeat.RedBeatScheduler"
#: Seconds between two Beat ticks at most: how often the active Beat renews its lock and how often
#: a standby Beat tries to take it.
DEFAULT_MAX_LOOP_INTERVAL = 5
#: The lock outlives this many ticks of the active Beat: a slow Redis round trip or a short pause
#: does not hand the schedule over; a dead Beat's lock expires after ``factor * max_interval``.
LOCK_TIMEOUT_FACTOR = 5
#: Below this, the active Beat's lock could expire between two of its own renewals.
MIN_LOCK_TIMEOUT_FACTOR = 2


class BeatConfigError(ValueError):
    """Beat's lock settings cannot give one scheduler."""


def key_prefix(settings: Settings) -> str:
    """RedBeat's key prefix for ``settings`` (whose prefix carries kombu's global_keyprefix)."""
    return f"{settings.key_prefix}:redbeat:"


def _prefix_of(conf: Any) -> str:
    return str(conf.get("redbeat_key_prefix") or "redbeat:")


def schedule_key_of(conf: Any) -> str:
    """The sorted set of RedBeat's schedule with ``conf`` (exists once a RedBeat Beat started)."""
    return _prefix_of(conf) + ":schedule"


def lock_key_of(conf: Any) -> str:
    """The lock key RedBeat uses with ``conf`` (the rule of ``redbeat.schedulers.RedBeatConfig``:
    ``redbeat_lock_key``, prefixed when it does not start with the prefix, else
    ``<prefix>:lock``)."""
    prefix = _prefix_of(conf)
    lock_key = conf.get("redbeat_lock_key")
    if not lock_key:
        return prefix + ":lock"
    lock_key = str(lock_key)
    return lock_key if lock_key.startswith(prefix) else prefix + lock_key


def max_interval_of(conf: Any) -> float:
    """Beat's longest sleep between ticks with ``conf`` (Celery's 300 s when unset)."""
    return float(conf.get("beat_max_loop_interval") or 300)


def lock_timeout_of(conf: Any) -> float:
    """RedBeat's lock timeout with ``conf`` (RedBeat's own default: 5 x max interval)."""
    return float(conf.get("redbeat_lock_timeout") or 5 * max_interval_of(conf))


def takeover_bound(conf: Any) -> float:
    """Seconds after the active Beat dies (SIGKILL, host lost) by which a standby schedules: its
    lock expires (``lock_timeout`` after its last renewal) and the standby's next try (every
    ``max_interval``) takes it. A graceful stop (SIGTERM) releases the lock: then at most
    ``max_interval``."""
    return lock_timeout_of(conf) + max_interval_of(conf)


def redis_options(settings: Settings) -> dict[str, Any]:
    """``redbeat_redis_options`` for the state Redis of ``settings``: RedBeat's Sentinels, master
    name and credentials for a ``sentinel://`` URL (``worker_app.sentinel.redbeat_options``);
    for ``redis://`` none (set explicitly, empty, so RedBeat does not fall back on
    ``broker_transport_options``, which are the broker's)."""
    if is_sentinel_url(settings.state_redis_url) and settings.sentinel is not None:
        return redbeat_options(settings.state_redis_url, settings.sentinel)[1]
    return {}


def redis_url(settings: Settings) -> str:
    """``redbeat_redis_url``: the state Redis, or ``redis-sentinel://`` behind Sentinels."""
    if is_sentinel_url(settings.state_redis_url) and settings.sentinel is not None:
        return redbeat_options(settings.state_redis_url, settings.sentinel)[0]
    return settings.state_redis_url


def redis_use_ssl(settings: Settings) -> dict[str, Any] | bool:
    """``redbeat_redis_use_ssl``: the TLS of ``settings`` for a ``rediss://`` state Redis (or a
    ``sentinel://`` one with ``WORKER_APP_SENTINEL_TLS``: RedBeat then reaches the master over
    TLS, the Sentinels through ``sentinel_kwargs``), else
    False (never RedBeat's fallback, the broker's ``broker_use_ssl``: the state Redis may be
    another server, and a dict turns TLS on for Sentinel-managed connections)."""
    url = settings.state_redis_url
    sentinel = settings.sentinel
    sentinel_tls = sentinel is not None and sentinel.tls is not None and is_sentinel_url(url)
    return settings.tls.redis_kwargs() if is_tls_url(url) or sentinel_tls else False


def configure_beat(conf: Any, settings: Settings, set_by_user: Callable[[Any, str], bool]) -> None:
    """Set RedBeat's keys, Redis and lock on ``conf`` (an app's configuration) from
    ``settings``; ``set_by_user(conf, name)`` tells a user's value (which stays) from a default."""
    if not set_by_user(conf, "beat_max_loop_interval") and not conf.get("beat_max_loop_interval"):
        conf["beat_max_loop_interval"] = DEFAULT_MAX_LOOP_INTERVAL
    defaults: dict[str, Any] = {
        "redbeat_redis_url": redis_url(settings),
        "redbeat_key_prefix": key_prefix(settings),
        "redbeat_redis_options": redis_options(settings),
        "redbeat_redis_use_ssl": redis_use_ssl(settings),
        "redbeat_lock_timeout": LOCK_TIMEOUT_FACTOR * max_interval_of(conf),
    }
    for name, value in defaults.items():
        if not set_by_user(conf, name) or conf.get(name) is None:
            conf[name] = value
    max_interval = max_interval_of(conf)
    lock_timeout = lock_timeout_of(conf)
    if lock_timeout < MIN_LOCK_TIMEOUT_FACTOR * max_interval:
        raise BeatConfigError(
            f"redbeat_lock_timeout={lock_timeout:g} must be at least "
            f"{MIN_LOCK_TIMEOUT_FACTOR} x beat_max_loop_interval={max_interval:g}: the active "
            "Beat renews its lock once per tick, and a lock that expires between two renewals "
            "hands the schedule to the standby while the active Beat still runs"
        )
