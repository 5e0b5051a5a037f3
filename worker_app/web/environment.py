"""The console built from its configuration (what ``worker-app web serve`` runs).

- ``WORKER_APP_CONSOLE_USERS_FILE`` (required): the users YAML file (``worker_app.web.users``);
- ``WORKER_APP_CONSOLE_SECRET_KEY_FILE`` (required): a file holding the secret that signs
  sessions and CSRF tokens (32+ characters; surrounding whitespace is ignored);
- ``WORKER_APP_CONSOLE_FLOWER_URL`` (optional): Flower's address, linked from every page.

The DLQ store and the broker are the app's, exactly as for ``worker-app dlq``. Any of these that
cannot be used is a ``ConsoleConfigError``: one line naming the variable and the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from worker_app.configuration import settings_of
from worker_app.dlq.writer import store_for
from worker_app.web.app import MIN_SECRET_KEY, create_console
from worker_app.web.users import UsersFileError, load_users

USERS_FILE = "WORKER_APP_CONSOLE_USERS_FILE"
SECRET_KEY_FILE = "WORKER_APP_CONSOLE_SECRET_KEY_FILE"  # noqa: S105 - a variable name
FLOWER_URL = "WORKER_APP_CONSOLE_FLOWER_URL"


class ConsoleConfigError(ValueError):
    """The console's configuration cannot be used (one line naming the variable and the file)."""


def _required(environ: Mapping[str, str], variable: str) -> str:
    value = environ.get(variable, "").strip()
    if not value:
        raise ConsoleConfigError(f"{variable} is not set: the console needs it (no default)")
    return value


def read_secret_key(path: str) -> str:
    """The secret key in the file at ``path`` (the name of the variable in the error)."""
    where = f"{SECRET_KEY_FILE}={path}"
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConsoleConfigError(
            f"{where}: cannot read the secret key file: {error.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise ConsoleConfigError(f"{where}: the secret key file is not UTF-8 text") from None
    if len(key) < MIN_SECRET_KEY:
        raise ConsoleConfigError(
            f"{where}: the secret key has {len(key)} characters, at least {MIN_SECRET_KEY} needed"
        )
    return key


def flower_url_of(environ: Mapping[str, str]) -> str | None:
    """Flower's address, if configured (http or https)."""
    url = environ.get(FLOWER_URL, "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ConsoleConfigError(f"{FLOWER_URL}={url}: expected an http:// or https:// URL")
    return url


def console_from_environment(celery_app: Any, environ: Mapping[str, str] | None = None) -> Flask:
    """The console for ``celery_app`` configured by ``environ`` (default: ``os.environ``)."""
    environ = os.environ if environ is None else environ
    users_file = _required(environ, USERS_FILE)
    try:
        users = load_users(users_file)
    except UsersFileError as error:
        raise ConsoleConfigError(f"{USERS_FILE}: {error}") from None
    secret_key = read_secret_key(_required(environ, SECRET_KEY_FILE))
    flower_url = flower_url_of(environ)
    store = store_for(settings_of(celery_app))
    return create_console(store, users, secret_key, celery_app, flower_url=flower_url)
