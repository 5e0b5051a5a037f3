"""``-A/--app MODULE``: the Celery app a command works on (any level of the command line)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from worker_app.configuration import settings_of
from worker_app.loading import APP_VARIABLE, load_app
from worker_app.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
_KEY = "worker_app.app_spec"


def _remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[_KEY] = value


def app_option(command: F) -> F:
    """Add ``-A/--app`` to ``command``; the value is shared with its subcommands."""
    option = click.option(
        "-A",
        "--app",
        "app_spec",
        metavar="MODULE",
        expose_value=False,
        is_eager=True,
        callback=_remember,
        help=f"The Celery app (Celery's -A; default: ${APP_VARIABLE}, else the bundled "
        "worker_app). It must call worker_app.configure(app).",
    )
    return option(command)


def cli_app() -> Any:
    """The app named by ``-A`` or the environment (loaded once per command)."""
    ctx = click.get_current_context()
    if "worker_app.app" not in ctx.meta:
        ctx.meta["worker_app.app"] = load_app(ctx.meta.get(_KEY))
    return ctx.meta["worker_app.app"]


def cli_settings() -> Settings:
    """The worker_app settings of the command's app."""
    return settings_of(cli_app())
