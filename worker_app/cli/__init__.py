"""The ``worker-app`` command line: workers, the DLQ and inspection."""

from __future__ import annotations

import click

from worker_app import __version__
from worker_app.cli.demo import demo
from worker_app.cli.dlq import dlq
from worker_app.cli.exporter import exporter
from worker_app.cli.inspect import inspect, ping, pools, probe
from worker_app.cli.node import node
from worker_app.cli.worker import worker


@click.group()
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
