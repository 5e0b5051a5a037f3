"""``worker-app worker --pool NAME``: run a Celery worker for one pool."""

from __future__ import annotations

import dataclasses
import os

import click

from worker_app.pools import POOLS, UnknownPoolError, get_pool


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--pool", "pool_name", required=True, help=f"One of: {', '.join(POOLS)}.")
@click.option(
    "--concurrency", type=click.IntRange(min=1), help="Override the pool's process count."
)
@click.option("--hostname", help="Node name (default: POOL@%h). Must keep the pool in it.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--events/--no-events", default=True, show_default=True, help="Send task events (Flower)."
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    pool_name: str,
    concurrency: int | None,
    hostname: str | None,
    loglevel: str,
    events: bool,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker with the queues and limits of pool POOL.

    Extra arguments after the options go to `celery worker` unchanged."""
    try:
        pool = get_pool(pool_name)
    except UnknownPoolError as exc:
        raise click.BadParameter(str(exc), param_hint="--pool") from None
    if hostname and pool.name not in hostname:
        raise click.BadParameter(
            f"the node name must carry the pool name {pool.name!r}", param_hint="--hostname"
        )
    # Before the app is imported: logs and metrics read the pool from here.
    os.environ["WORKER_APP_POOL"] = pool.name
    from worker_app import app  # noqa: PLC0415 - the app reads the environment

    app.worker_app_settings = dataclasses.replace(app.worker_app_settings, pool=pool.name)

    argv = pool.worker_argv(concurrency=concurrency, hostname=hostname)
    argv += ["--loglevel", loglevel]
    if events:
        argv.append("--task-events")
    argv += list(celery_args)
    app.worker_main(argv)
