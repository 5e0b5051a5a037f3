"""Inspection helpers: broker ping, pool definitions, live workers."""

from __future__ import annotations

import dataclasses
import json

import click

from worker_app.cli.app_option import app_option, cli_app
from worker_app.settings import Settings, SettingsError


@click.command()
@app_option
def ping() -> None:
    """Check that the broker named by CELERY_BROKER_URL answers."""
    app = cli_app()

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
    click.echo(f"broker ok: {app.conf.broker_url.split('@')[-1]}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the catalogue's own format).")
@click.option(
    "--file",
    "path",
    help="Check and print this catalogue instead (- reads standard input); default: "
    "WORKER_APP_POOLS_FILE, else the package's pools.yml.",
)
def pools(as_json: bool, path: str | None) -> None:
    """Print the pool catalogue in effect (limits under WORKER_APP_MAX_TIME_LIMIT).

    Exits 2 with one line naming the pool and the field when the catalogue is not valid;
    warns (standard error) of a time limit WORKER_APP_VISIBILITY_TIMEOUT does not cover."""
    from worker_app.pools import load_catalogue  # noqa: PLC0415

    try:
        settings = Settings.from_env()
        if path is not None:
            settings = dataclasses.replace(settings, pools_file=path)
        loaded = load_catalogue(settings.pools_file)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    for line in loaded.visibility_timeout_shortfalls(
        settings.visibility_timeout, settings.max_time_limit
    ):
        click.echo(f"warning: {line}", err=True)
    catalogue = loaded.capped(settings.max_time_limit)
    if as_json:
        click.echo(json.dumps(catalogue.as_dict(), indent=2))
        return
    click.echo(
        f"{catalogue.source}: default queue {catalogue.default_queue}, "
        f"maintenance queue {catalogue.maintenance_queue}"
    )
    click.echo(
        f"{'POOL':<12} {'QUEUES':<20} {'PROCS':>7} {'SOFT':>6} {'HARD':>6} {'MAX TASKS':>9} "
        f"{'PORT':>5} {'NODES':>5} {'WAIT SLO':>9}"
    )
    for pool in catalogue.pools:
        procs = (
            f"{pool.autoscale.min}-{pool.autoscale.max}"
            if pool.autoscale
            else str(pool.concurrency)
        )
        click.echo(
            f"{pool.name:<12} {','.join(pool.queues):<20} {procs:>7} {pool.soft_time_limit:>6} "
            f"{pool.time_limit:>6} {pool.max_tasks_per_child:>9} {pool.metrics_port:>5} "
            f"{pool.nodes:>5} {pool.wait_slo_seconds:>7g}s {pool.wait_slo_severity}"
        )


@click.command()
@app_option
@click.argument("what", type=click.Choice(["ping", "active", "reserved", "stats", "queues"]))
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for replies.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(what: str, timeout: float, as_json: bool) -> None:
    """Ask the running workers (ping, active, reserved, stats, queues)."""
    app = cli_app()
    control = app.control.inspect(timeout=timeout)
    method = {"queues": "active_queues"}.get(what, what)
    replies = getattr(control, method)() or {}
    if not replies:
        raise click.ClickException("no worker replied")
    if as_json:
        click.echo(json.dumps(replies, indent=2, default=str))
        return
    for node, reply in sorted(replies.items()):
        if what == "ping":
            click.echo(f"{node}: {reply.get('ok', reply)}")
        elif what in ("active", "reserved"):
            click.echo(f"{node}: {len(reply)} task(s)")
            for task in reply:
                click.echo(f"  {task.get('name')}[{task.get('id')}] {task.get('args')}")
        elif what == "queues":
            click.echo(f"{node}: {', '.join(q['name'] for q in reply)}")
        else:
            pool = reply.get("pool", {})
            click.echo(
                f"{node}: processes={len(pool.get('processes', []))} total={reply.get('total')}"
            )


@click.command()
@click.argument("url")
@click.option("--user", help="Basic-auth user.")
@click.option("--password-env", help="Environment variable holding the basic-auth password.")
@click.option("--timeout", default=5.0, show_default=True)
def probe(url: str, user: str | None, password_env: str | None, timeout: float) -> None:
    """Exit 0 if URL answers 2xx (a container healthcheck)."""
    import base64  # noqa: PLC0415
    import os  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("only http(s) URLs", param_hint="URL")
    request = urllib.request.Request(url)  # noqa: S310 - scheme checked above
    if user:
        password = os.environ.get(password_env or "", "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"{url}: {exc}") from None
    click.echo(f"{url}: {status}")
