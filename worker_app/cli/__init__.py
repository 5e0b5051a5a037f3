"""The ``worker-app`` command line: workers, the DLQ and inspection."""

from __future__ import annotations

from typing import Any

import click

from worker_app import __version__
from worker_app.cli.demo import demo
from worker_app.cli.dlq import dlq
from worker_app.cli.exporter import exporter
from worker_app.cli.inspect import inspect, ping, pools, probe
from worker_app.cli.node import node
from worker_app.cli.worker import worker
from worker_app.settings import SettingsError


class _Group(click.Group):
    """Configuration errors (a bad WORKER_APP_* value or pool catalogue) end the command
    with one line and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="worker-app")
def main() -> None:
    """Operate the Celery workers of the Celery production stack bundle.

    The broker is read from CELERY_BROKER_URL."""


main.add_command(worker)
main.add_command(dlq)
main.add_command(ping)
main.add_command(pools)
main.add_command(inspect)
main.add_command(exporter)
main.add_command(demo)
main.add_command(probe)
main.add_command(node)

__all__ = ["main"]
