"""``configure(app)``: the bundle's Redis safety, transport, DLQ, headers, size guard, metrics
and logging applied to any Celery app, and ``settings_of(app)``, the one way to reach the
worker_app settings of an app.

Nothing happens at import. ``configure`` changes the app it is given, plus two things that are
process-wide by nature and happen only when it is called: kombu's ``redis://`` and ``rediss://``
schemes are served by worker_app's transport (``worker_app.broker_transport``; every kombu user
of the process, Flower included, then cannot lose a message it took) and Celery's
``setup_logging`` signal adds worker_app's log handler when a worker or Beat starts.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from typing import Any

from celery import Celery, signals
from celery.app.defaults import DEFAULTS
from kombu.utils.imports import symbol_by_name

from worker_app import broker_transport, json_logging
from worker_app.amqp import GuardedAMQP, GuardedSender, guarded_amqp_class
from worker_app.beat_scheduler import configure_beat
from worker_app.pools import Catalogue, load_catalogue
from worker_app.queues import celery_queues
from worker_app.sentinel import is_sentinel_url
from worker_app.settings import Settings, SettingsError
from worker_app.tls import is_tls_url

logger = logging.getLogger("worker_app.configure")

#: Celery's default priority separator; producers with stock transport options use it.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = [0, 3, 6, 9]
BUILTIN_TASK_MODULES: tuple[str, ...] = ("worker_app.tasks",)
DEAD_LETTERING_CONSUMER = "worker_app.dlq.consumer:DeadLetteringConsumer"

#: Settings the guarantees depend on, each with the reason given when it overrides the user's.
REQUIRED: dict[str, tuple[Any, str]] = {
    "task_acks_late": (True, "a message is acknowledged only after its task ran"),
    "task_reject_on_worker_lost": (
        True,
        "a task whose worker process died goes back to its queue instead of being acked",
    ),
    "task_acks_on_failure_or_timeout": (
        True,
        "a failed task is acknowledged after its dead letter was written",
    ),
    "worker_prefetch_multiplier": (
        1,
        "a worker holds no message it cannot start (prefetched messages wait unacked)",
    ),
    "worker_cancel_long_running_tasks_on_connection_loss": (
        True,
        "a task whose ack cannot reach Redis is stopped; its message comes back",
    ),
    "worker_consumer": (
        DEAD_LETTERING_CONSUMER,
        "messages Celery would drop (unknown task, bad body) are dead-lettered first",
    ),
    "worker_hijack_root_logger": (
        False,
        "the handlers the host application installed on the root logger stay",
    ),
    "broker_connection_retry_on_startup": (True, "a worker waits for Redis instead of exiting"),
    "broker_connection_max_retries": (None, "a worker never gives up reconnecting to Redis"),
}

#: Settings applied only where the user left Celery's default.
PREFERRED: dict[str, Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "task_track_started": True,
    "task_send_sent_event": True,
    "broker_channel_error_retry": True,
    "enable_utc": True,
    "timezone": "UTC",
}


def settings_of(app: Any) -> Settings:
    """The worker_app settings of ``app``: those ``configure`` gave it, or (for an app it never
    saw) the environment's, with the app's own broker URL."""
    settings = getattr(app, "worker_app_settings", None)
    if isinstance(settings, Settings):
        return settings
    settings = Settings.from_env()
    conf = getattr(app, "conf", None)
    broker_url = conf.broker_url if conf is not None else None
    if isinstance(broker_url, str) and broker_url:
        settings = dataclasses.replace(settings, broker_url=broker_url)
    if conf is None:
        return settings
    return _with_sentinel_master(_under_global_keyprefix(settings, conf), conf)


def _with_sentinel_master(settings: Settings, conf: Any) -> Settings:
    """``settings`` with the Sentinel master the app's transport options name, when the
    environment names none."""
    options = getattr(conf, "broker_transport_options", None) or {}
    master = options.get("master_name")
    if settings.sentinel_master or not master:
        return settings
    return dataclasses.replace(settings, sentinel_master=str(master))


def _under_global_keyprefix(settings: Settings, conf: Any) -> Settings:
    """``settings`` whose own keys (DLQ, idempotency, breakers, limits) live under kombu's
    ``global_keyprefix`` when the app's transport options name one, as the broker's keys do:
    several apps share one Redis without meeting."""
    options = getattr(conf, "broker_transport_options", None) or {}
    prefix = str(options.get("global_keyprefix") or "")
    if not prefix or settings.key_prefix.startswith(prefix):
        return settings
    return dataclasses.replace(settings, key_prefix=prefix + settings.key_prefix)


def catalogue_of(app: Any) -> Catalogue:
    """The pool catalogue of ``app`` (the environment's for an app ``configure`` never saw)."""
    catalogue = getattr(app, "worker_app_catalogue", None)
    if isinstance(catalogue, Catalogue):
        return catalogue
    return load_and_check(settings_of(app))


def is_configured(app: Any) -> bool:
    """Whether ``configure`` ran on ``app``."""
    return isinstance(getattr(app, "worker_app_settings", None), Settings)


def load_and_check(settings: Settings) -> Catalogue:
    """The pool catalogue in effect. A time limit the visibility timeout does not cover is a
    warning, not an error: with consumer heartbeats the timeout is only the backstop for
    workers without worker_app's transport (see ``Catalogue.visibility_timeout_shortfalls``)."""
    catalogue = load_catalogue(settings.pools_file)
    for line in catalogue.visibility_timeout_shortfalls(
        settings.visibility_timeout, settings.max_time_limit
    ):
        logger.warning(line)
    return catalogue


def maintenance_schedule(interval: int, queue: str) -> dict[str, dict[str, Any]]:
    """Beat's housekeeping schedule (every ``interval`` seconds, on ``queue``)."""
    return {
        "trim-dead-letters": {
            "task": "worker_app.maintenance.trim_dlq",
            "schedule": float(interval),
            "options": {"queue": queue, "expires": max(1, interval - 10)},
        },
    }


def transport_options(settings: Settings, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Broker transport options: the user's, with the visibility timeout and priority queues
    the bundle relies on (Celery's default separator, so stock producers interoperate)."""
    options = dict(current or {})
    grace = float(settings.consumer_grace)
    options.update(
        visibility_timeout=settings.visibility_timeout,
        # Consumer heartbeats (worker_app.broker_transport): beat, and sweep for dead
        # consumers (one ZRANGEBYSCORE), every 5 s or three times per grace period.
        inflight_grace=grace,
        inflight_refresh_interval=min(5.0, grace / 3),
        inflight_sweep_interval=min(5.0, grace / 3),
        queue_order_strategy="priority",
        priority_steps=list(PRIORITY_STEPS),
        sep=PRIORITY_SEP,
    )
    if is_sentinel_url(settings.broker_url):
        # Every kombu user of the process (Celery, Flower) finds the master through the
        # Sentinels.
        options = sentinel_options(settings, options)
    if settings.publish_min_replicas:
        options["publish_min_replicas"] = settings.publish_min_replicas
        options["publish_replica_timeout"] = settings.publish_replica_timeout_ms
    return options


def sentinel_options(settings: Settings, current: dict[str, Any] | None) -> dict[str, Any]:
    """Transport options (the broker's, or Celery's Sentinel result backend's) with the
    Sentinel master name and the Sentinels' credentials, one connection attempt per Sentinel
    (``worker_app.sentinel.one_attempt``); the user's own values stay."""
    options = dict(current or {})
    sentinel = settings.sentinel
    if sentinel is not None:
        options.setdefault("master_name", sentinel.master)
        options.setdefault("sentinel_kwargs", sentinel.client_kwargs())
    return options


def use_tls(conf: Any, settings: Settings) -> None:
    """Celery's ``broker_use_ssl`` (a ``rediss://`` broker) and ``redis_backend_use_ssl`` (a
    ``rediss://`` result backend) from ``settings.tls``, where the app set none: the server's
    certificate verified (kombu alone would take a ``rediss://`` URL without options unverified).
    A ``sentinel://`` URL counts as TLS with ``WORKER_APP_SENTINEL_TLS``: the data nodes the
    Sentinels name are then reached over TLS (the Sentinels themselves through
    ``sentinel_kwargs``, see :func:`sentinel_options`)."""
    options = settings.tls.redis_kwargs()
    sentinel_tls = settings.sentinel is not None and settings.sentinel.tls is not None

    def on_tls(url: Any) -> bool:
        return isinstance(url, str) and (is_tls_url(url) or (sentinel_tls and is_sentinel_url(url)))

    if on_tls(conf.broker_url) and not conf.broker_use_ssl:
        conf.broker_use_ssl = dict(options)
    backend = conf.result_backend
    if on_tls(backend) and not conf.redis_backend_use_ssl:
        conf.redis_backend_use_ssl = dict(options)
    if not settings.tls.verifies and any(
        on_tls(url) for url in (conf.broker_url, backend, settings.state_redis_url)
    ):
        logger.warning(
            "WORKER_APP_REDIS_TLS_CERT_REQS=none: Redis's certificate is not verified; the "
            "connection is encrypted but anyone on the path can pose as Redis"
        )


def _user_settings(settings: Settings, conf: Any) -> Settings:
    """``settings`` with the broker and result backend the app's own configuration names."""
    changes: dict[str, Any] = {}
    if isinstance(conf.broker_url, str) and conf.broker_url:
        changes["broker_url"] = conf.broker_url
    if isinstance(conf.result_backend, str) and conf.result_backend:
        changes["result_backend"] = conf.result_backend
    return dataclasses.replace(settings, **changes) if changes else settings


def _set_by_user(conf: Any, name: str) -> bool:
    """Whether the app's own configuration names ``name`` (Celery's defaults do not count;
    ``config_from_object(..., namespace="CELERY")`` keys count with their prefix)."""
    prefixed = f"{getattr(conf, 'prefix', None) or ''}{name.upper()}"
    return any(name in layer or prefixed in layer for layer in conf.maps[:-1])


def _overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    names = {field.name for field in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(
            f"configure() got unknown settings {', '.join(unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    return dataclasses.replace(settings, **overrides)


def configure(app: Celery, **overrides: Any) -> Celery:
    """Make ``app`` safe on Redis with the bundle's settings and return it.

    ``overrides`` are worker_app settings (``Settings`` fields, e.g. ``visibility_timeout=7200``
    or ``pools_file="pools.yml"``); the rest comes from the environment (``WORKER_APP_*``) and
    the broker URL and result backend from the app's own configuration when it names them.
    Settings the guarantees need are set; where the user had set another value, the worker
    says so once when it starts. Settings it does not need stay as the user set them.
    """
    conf = app.conf
    settings = _under_global_keyprefix(
        _overrides(_user_settings(Settings.from_env(), conf), overrides), conf
    )
    settings = _with_sentinel_master(settings, conf)
    settings.check_sentinel()
    catalogue = load_and_check(settings)
    overridden: list[str] = []
    for name, (value, reason) in REQUIRED.items():
        current = conf.get(name)
        if current != value and _set_by_user(conf, name):
            overridden.append(f"{name}={current!r} -> {value!r} ({reason})")
        conf[name] = value
    for name, value in PREFERRED.items():
        if conf.get(name) == DEFAULTS.get(name):
            conf[name] = value
    conf.broker_url = settings.broker_url
    if settings.result_backend and not conf.result_backend:
        conf.result_backend = settings.result_backend
    conf.broker_transport_options = transport_options(settings, conf.broker_transport_options)
    if isinstance(conf.result_backend, str) and is_sentinel_url(conf.result_backend):
        conf.result_backend_transport_options = sentinel_options(
            settings, conf.result_backend_transport_options
        )
    use_tls(conf, settings)
    if not conf.task_queues:
        conf.task_queues = celery_queues(catalogue)
    if conf.task_default_queue == DEFAULTS["task_default_queue"]:
        conf.task_default_queue = catalogue.default_queue
        conf.task_default_exchange = catalogue.default_queue
        conf.task_default_routing_key = catalogue.default_queue
    schedule = dict(conf.beat_schedule or {})
    schedule.update(
        maintenance_schedule(settings.maintenance_interval, catalogue.maintenance_queue)
    )
    conf.beat_schedule = schedule
    configure_beat(conf, settings, _set_by_user)
    if conf.result_expires == DEFAULTS["result_expires"]:
        conf.result_expires = 24 * 3600
    _guard_publishes(app)
    app.worker_app_settings = settings
    app.worker_app_catalogue = catalogue
    app.worker_app_overridden = tuple(overridden)
    for module in BUILTIN_TASK_MODULES:
        if module not in (conf.include or ()):
            conf.include = (*tuple(conf.include or ()), module)
    broker_transport.install()
    _connect_process_hooks()
    return app


def _guard_publishes(app: Celery) -> None:
    """The app's AMQP layer gains the size guard and publish headers."""
    current = app.__dict__.get("amqp")
    if isinstance(current, GuardedSender):
        return
    base = symbol_by_name(app.amqp_cls) if isinstance(app.amqp_cls, str) else app.amqp_cls
    guarded = guarded_amqp_class(base)
    # An importable path keeps the app picklable for the stock AMQP class.
    app.amqp_cls = "worker_app.amqp:GuardedAMQP" if guarded is GuardedAMQP else guarded
    app.__dict__.pop("amqp", None)


def warn_overridden(app: Any) -> None:
    """Log, once, each user setting ``configure`` replaced and why."""
    for line in getattr(app, "worker_app_overridden", ()):
        logger.warning("worker_app.configure overrides %s", line)


_HOOKS: dict[str, Any] = {}


def _connect_process_hooks() -> None:
    if _HOOKS:
        return

    def add_log_handler(loglevel: int | str | None = None, **_: Any) -> None:
        try:
            settings = Settings.from_env()
        except SettingsError:
            settings = Settings()
        json_logging.configure(loglevel or "INFO", settings.log_format, settings.pool)

    _HOOKS["setup_logging"] = add_log_handler
    signals.setup_logging.connect(add_log_handler, weak=False, dispatch_uid="worker_app.logging")
    _HOOKS["worker_before_create_process"] = freeze_startup_objects
    signals.worker_before_create_process.connect(
        freeze_startup_objects, weak=False, dispatch_uid="worker_app.gc_freeze"
    )


def freeze_startup_objects(**_: Any) -> None:
    """Before a prefork worker's first pool process: collect, then move every object of the
    main process to Python's permanent generation (``gc.freeze``), once. Celery runs a full
    ``gc.collect()`` in the main process before every fork (each replaced child: every
    ``max_tasks_per_child`` tasks), which walked the ~50,000+ objects of the imported
    modules each time (tens of ms of the main process's CPU per fork); garbage made later is
    still collected, and the children share those pages copy-on-write for longer."""
    if _HOOKS.get("frozen"):
        return
    _HOOKS["frozen"] = True
    gc.collect()
    gc.freeze()
