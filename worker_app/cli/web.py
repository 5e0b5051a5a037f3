"""``worker-app web``: the console (``serve``) and its users' password hashes."""

from __future__ import annotations

import logging
import sys

import click

from worker_app.cli.app_option import app_option, cli_app
from worker_app.web.users import hash_password

# The console's port: the one source for the role (console_port), the playbooks' wiring and the
# docker stack (tests/roles checks that they agree).
DEFAULT_PORT = 5580
DEFAULT_THREADS = 8


class ConsoleNotStarted(click.ClickException):
    """The console cannot start (its configuration, its address): one line, exit code 2."""

    exit_code = 2


@click.group()
@app_option
def web() -> None:
    """The console for dead letters, queues, workers and tasks."""


@web.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
    help="Port to bind.",
)  # fmt: skip
@click.option(
    "--threads", type=click.IntRange(1, 256), default=DEFAULT_THREADS, show_default=True,
    help="Requests served at once (one process: its metrics need no multiprocess mode).",
)  # fmt: skip
def serve(host: str, port: int, threads: int) -> None:
    """Serve the console with waitress (a production WSGI server).

    Configured by WORKER_APP_CONSOLE_USERS_FILE and WORKER_APP_CONSOLE_SECRET_KEY_FILE
    (required), WORKER_APP_CONSOLE_FLOWER_URL (optional) and the app's worker_app settings
    (its broker and DLQ, as for worker-app dlq)."""
    from waitress import serve as waitress_serve  # noqa: PLC0415 - only this command needs it

    from worker_app.web.environment import (  # noqa: PLC0415 - Flask only for the console
        ConsoleConfigError,
        console_from_environment,
    )

    try:
        console = console_from_environment(cli_app())
    except ConsoleConfigError as error:
        raise ConsoleNotStarted(" ".join(str(error).split())) from None
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        waitress_serve(console, host=host, port=port, threads=threads, ident="worker-app")
    except OSError as error:
        raise ConsoleNotStarted(
            f"cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None


@web.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input.")
def hash_password_command(from_stdin: bool) -> None:
    """Print a password hash for the console's users file (the password is never stored)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        click.echo(hash_password(password))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
