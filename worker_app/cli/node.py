"""``worker-app node drain|wait``: take worker nodes out of service and back."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from worker_app.cli.app_option import app_option, cli_app

#: Exit status of ``drain`` when tasks were still running at the deadline.
STILL_BUSY = 3


def _replies(method: str, nodes: list[str], timeout: float) -> dict[str, Any]:
    app = cli_app()

    inspector = app.control.inspect(destination=nodes, timeout=timeout)
    return getattr(inspector, method)() or {}


def _busy(nodes: list[str], timeout: float) -> dict[str, int]:
    """Tasks running or reserved (prefetched) per node that answered."""
    busy: dict[str, int] = dict.fromkeys(nodes, 0)
    for method in ("active", "reserved"):
        for node, tasks in _replies(method, nodes, timeout).items():
            busy[node] = busy.get(node, 0) + len(tasks)
    return busy


@click.group()
@app_option
def node() -> None:
    """Drain worker nodes before a restart and wait for them afterwards."""


@node.command()
@click.argument("nodes", nargs=-1, required=True)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for idle.")
@click.option("--reply-timeout", default=2.0, show_default=True, help="Seconds per control call.")
def drain(nodes: tuple[str, ...], timeout: float, reply_timeout: float) -> None:
    """Stop NODES consuming (cancel every queue consumer), then wait until they are idle.

    Tasks already running finish; messages nobody took stay in Redis for the other nodes.
    Exits 3 if tasks still run at the deadline (a warm shutdown then finishes or requeues them).
    """
    app = cli_app()

    targets = list(nodes)
    queues = _replies("active_queues", targets, reply_timeout)
    missing = sorted(set(targets) - set(queues))
    cancelled: dict[str, list[str]] = {}
    for name, consumed in sorted(queues.items()):
        for queue in consumed:
            app.control.cancel_consumer(
                queue["name"], destination=[name], reply=True, timeout=reply_timeout
            )
            cancelled.setdefault(name, []).append(queue["name"])
    deadline = time.monotonic() + timeout
    busy = _busy(targets, reply_timeout)
    while any(busy.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        busy = _busy(targets, reply_timeout)
    report = {"cancelled": cancelled, "not_answering": missing, "busy": busy}
    click.echo(json.dumps(report, sort_keys=True))
    if any(busy.values()):
        raise SystemExit(STILL_BUSY)


@node.command()
@click.argument("nodes", nargs=-1, required=True)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait.")
def wait(nodes: tuple[str, ...], timeout: float) -> None:
    """Wait until every one of NODES answers a ping."""
    deadline = time.monotonic() + timeout
    missing = set(nodes)
    while missing:
        missing -= set(_replies("ping", sorted(missing), 1.0))
        if missing and time.monotonic() > deadline:
            raise click.ClickException(f"no ping reply from {', '.join(sorted(missing))}")
    click.echo(json.dumps({"answering": sorted(nodes)}))
