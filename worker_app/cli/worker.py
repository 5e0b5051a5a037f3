"""``worker-app worker --pool NAME``: run a Celery worker for one pool."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import click

from worker_app.cli.app_option import app_option, cli_app
from worker_app.pools import UnknownPoolError

if TYPE_CHECKING:
    from worker_app.settings import Settings


@click.command(context_settings={"ignore_unknown_options": True})
@app_option
@click.option(
    "--pool", "pool_name", required=True, help="A pool of the catalogue (worker-app pools)."
)
@click.option(
    "--concurrency", type=click.IntRange(min=1), help="Override the pool's process count."
)
@click.option("--hostname", help="Node name (default: POOL@%h). Must keep the pool in it.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--events/--no-events", default=True, show_default=True, help="Send task events (Flower)."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    envvar="WORKER_APP_METRICS_PORT",
    help="Port of this node's /metrics (default: the pool's; 0 turns metrics off).",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    envvar="WORKER_APP_METRICS_ADDRESS",
    help="Address the metrics endpoint binds to (a private interface).",
)
@click.option(
    "--process-index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of this process among the pool's processes on the host (supervisor's "
    "%(process_num)d); added to the metrics port.",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    pool_name: str,
    concurrency: int | None,
    hostname: str | None,
    loglevel: str,
    events: bool,
    metrics_port: int | None,
    metrics_address: str,
    process_index: int,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker with the queues and limits of pool POOL.

    The app is the bundled one, or the one named by -A / WORKER_APP_CELERY_APP (Django is set up
    first when DJANGO_SETTINGS_MODULE is set). Extra arguments after the options go to
    `celery worker` unchanged."""
    from worker_app.configuration import catalogue_of, warn_overridden  # noqa: PLC0415
    from worker_app.factory import (  # noqa: PLC0415
        check_task_queues,
        check_task_time_limits,
        pool_settings,
    )
    from worker_app.state_redis import check_tls  # noqa: PLC0415

    app = cli_app()
    try:
        pool = catalogue_of(app).pool(pool_name)
    except UnknownPoolError as exc:
        raise click.BadParameter(str(exc), param_hint="--pool") from None
    if hostname and pool.name not in hostname:
        raise click.BadParameter(
            f"the node name must carry the pool name {pool.name!r}", param_hint="--hostname"
        )
    node = (hostname or f"{pool.name}@%h").replace("%h", socket.gethostname())
    os.environ["WORKER_APP_POOL"] = pool.name
    port = pool.metrics_port if metrics_port is None else metrics_port
    if port:
        port += process_index
        _enable_metrics(node, port, metrics_address)

    settings = pool_settings(app, pool.name)
    check_tls(settings)  # a certificate nobody trusts: one line now, not retries forever
    app.loader.import_default_modules()
    catalogue = catalogue_of(app)
    check_task_time_limits(app, settings, catalogue)
    check_task_queues(app, catalogue)
    _warn_overridden_at_start(app, warn_overridden)
    _migrate_legacy_priority_keys(app, settings, pool.queues)
    pool = pool.capped(settings.max_time_limit)
    argv = pool.worker_argv(concurrency=concurrency, hostname=node)
    argv += ["--loglevel", loglevel]
    if events:
        argv.append("--task-events")
    argv += list(celery_args)
    app.worker_main(argv)


def _migrate_legacy_priority_keys(app: Any, settings: Settings, queues: tuple[str, ...]) -> None:
    """Messages on worker_app 0.1's priority keys move to the keys this worker reads."""
    import redis  # noqa: PLC0415

    from worker_app import priority_keys  # noqa: PLC0415
    from worker_app.state_redis import broker_client  # noqa: PLC0415

    options = app.conf.broker_transport_options or {}
    try:
        moved = priority_keys.migrate(
            broker_client(settings), queues, options.get("priority_steps", ()), options["sep"]
        )
    except redis.RedisError as exc:
        # The worker waits for Redis itself; the next start moves them.
        click.echo(f"legacy priority keys not checked (Redis: {exc})", err=True)
        return
    if moved:
        click.echo(f"moved {moved} message(s) from legacy priority keys of {', '.join(queues)}")


def _warn_overridden_at_start(app: Any, warn: Any) -> None:
    """Log the user settings ``configure`` replaced once the worker's logging is set up."""
    from celery import signals  # noqa: PLC0415

    # celeryd_after_setup comes after the worker set up logging (worker_init comes before).
    @signals.celeryd_after_setup.connect(weak=False)  # type: ignore[untyped-decorator]
    def _warn(sender: Any = None, **_: Any) -> None:
        warn(app)


def _enable_metrics(node: str, port: int, address: str) -> None:
    """Multiprocess metrics for this node, served by the main process."""
    from celery import signals  # noqa: PLC0415

    from worker_app.metrics import worker_server  # noqa: PLC0415

    path = worker_server.prepare(node)
    from worker_app.metrics import worker_metrics  # noqa: PLC0415 - after prepare()

    worker_metrics.connect()

    @signals.worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _start_endpoint(sender: Any = None, **_: Any) -> None:
        worker_server.attach(sender)
        worker_server.serve(node, port, address, path)
        worker_server.init_breaker_states(sender.app)
