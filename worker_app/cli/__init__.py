"""The ``worker-app`` command line: workers, the DLQ and inspection."""

from __future__ import annotations

import urllib.parse
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError

from worker_app import __version__
from worker_app.cli.app_option import app_option
from worker_app.cli.demo import demo
from worker_app.cli.dlq import dlq
from worker_app.cli.exporter import exporter
from worker_app.cli.inspect import inspect, ping, pools, probe
from worker_app.cli.node import node
from worker_app.cli.web import web
from worker_app.cli.worker import worker
from worker_app.configuration import settings_of
from worker_app.settings import Settings, SettingsError
from worker_app.tls import TLSRefusedError, describe, is_tls_url


def masked(url: str) -> str:
    """``url`` with its password shown as ``****``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:****@{host}"))


class Unreachable(click.ClickException):
    """Redis did not answer, or refused TLS: one line, exit code 2."""

    exit_code = 2


def unreachable(exc: Exception, broker: bool, app: Any = None) -> Unreachable:
    """The one line that says which Redis did not answer and what to check (for a failed TLS
    handshake: the host and the cause, ``worker_app.tls.describe``)."""
    try:
        settings = settings_of(app) if app is not None else Settings.from_env()
    except SettingsError:
        settings = Settings()
    url = settings.broker_url if broker or not settings.redis_url else settings.state_redis_url
    if isinstance(exc, TLSRefusedError):
        return Unreachable(str(exc))
    line = describe(exc, url, settings.tls)
    if line is not None:
        return Unreachable(line)
    variable = "CELERY_BROKER_URL" if url == settings.broker_url else "WORKER_APP_REDIS_URL"
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if is_tls_url(url) and "timeout" in reason.lower():
        reason += "; a rediss:// URL to a port without TLS times out like this"
    return Unreachable(
        f"cannot reach Redis at {masked(url)} ({reason}): check that Redis runs there, that "
        f"this host may connect to it (address, port, firewall) and the URL and password in "
        f"{variable}; --debug shows the traceback"
    )


class _Group(click.Group):
    """Configuration errors (a bad WORKER_APP_* value or pool catalogue) and a Redis that does
    not answer end the command with one line and exit code 2 (``--debug``: the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from None
        except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
            if ctx.params.get("debug"):
                raise
            app = ctx.meta.get("worker_app.app")
            raise unreachable(exc, broker=isinstance(exc, OperationalError), app=app) from None


@click.group(cls=_Group)
@app_option
@click.version_option(__version__, prog_name="worker-app")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def main(debug: bool) -> None:
    """Operate the Celery workers of the Celery production stack bundle.

    The app is the bundled one or yours (-A MODULE or WORKER_APP_CELERY_APP); the broker is
    your app's broker_url, else CELERY_BROKER_URL."""


main.add_command(worker)
main.add_command(dlq)
main.add_command(ping)
main.add_command(pools)
main.add_command(inspect)
main.add_command(exporter)
main.add_command(demo)
main.add_command(probe)
main.add_command(node)
main.add_command(web)

__all__ = ["main"]
