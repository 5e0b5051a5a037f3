"""Inspection helpers: broker ping, pool definitions, live workers."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from worker_app.pools import POOLS
from worker_app.settings import Settings


@click.command()
def ping() -> None:
    """Check that the broker named by CELERY_BROKER_URL answers."""
    from worker_app import app  # noqa: PLC0415 - the app reads the environment

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
    click.echo(f"broker ok: {app.conf.broker_url.split('@')[-1]}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pools(as_json: bool) -> None:
    """List the pool definitions (queues, concurrency, limits under WORKER_APP_MAX_TIME_LIMIT)."""
    cap = Settings.from_env().max_time_limit
    effective = {name: pool.capped(cap) for name, pool in POOLS.items()}
    if as_json:
        click.echo(json.dumps({name: asdict(pool) for name, pool in effective.items()}, indent=2))
        return
    click.echo(f"{'POOL':<10} {'QUEUES':<12} {'PROCS':>5} {'SOFT':>6} {'HARD':>6} {'MAX TASKS':>9}")
    for pool in effective.values():
        click.echo(
            f"{pool.name:<10} {','.join(pool.queues):<12} {pool.concurrency:>5} "
            f"{pool.soft_time_limit:>6} {pool.time_limit:>6} {pool.max_tasks_per_child:>9}"
        )


@click.command()
@click.argument("what", type=click.Choice(["ping", "active", "reserved", "stats", "queues"]))
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for replies.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(what: str, timeout: float, as_json: bool) -> None:
    """Ask the running workers (ping, active, reserved, stats, queues)."""
    from worker_app import app  # noqa: PLC0415 - the app reads the environment

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
