"""``worker-app web``: the console (its server comes with issue 21's pages)."""

from __future__ import annotations

import sys

import click

from worker_app.web.users import hash_password


@click.group()
def web() -> None:
    """The console for dead letters, queues, workers and tasks."""


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
