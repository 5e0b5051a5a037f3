"""The ``worker-app`` command line."""

from __future__ import annotations

import click

from worker_app import __version__


@click.group()
@click.version_option(__version__, prog_name="worker-app")
def main() -> None:
    """Operate the Celery workers of the Celery production stack bundle."""


@main.command()
def ping() -> None:
    """Check that the broker named by CELERY_BROKER_URL answers."""
    from worker_app import app  # noqa: PLC0415 - import lazily: the app reads the environment

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
    click.echo(f"broker ok: {app.conf.broker_url.split('@')[-1]}")
