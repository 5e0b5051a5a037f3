"""Find the Celery app a ``worker-app`` command works on: ``-A MODULE`` or
``WORKER_APP_CELERY_APP``, else the bundled app. Django is set up when
``DJANGO_SETTINGS_MODULE`` is set, before any task module is imported."""

from __future__ import annotations

import importlib
import os
from typing import Any

from worker_app.configuration import is_configured
from worker_app.settings import SettingsError

#: The environment variable that names the app (the roles write it to the host's env file).
APP_VARIABLE = "WORKER_APP_CELERY_APP"
BUNDLED = "worker_app"


class AppNotFoundError(SettingsError):
    """The named app cannot be imported or was never configured."""


def app_spec(spec: str | None = None) -> str:
    """The app named on the command line, else by the environment, else the bundled one."""
    return spec or os.environ.get(APP_VARIABLE) or BUNDLED


def setup_django() -> None:
    """``django.setup()`` when the process has Django settings (Celery's own fixup does it
    later, after task modules could already have been imported)."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return
    importlib.import_module("django").setup()


def load_app(spec: str | None = None) -> Any:
    """The configured Celery app named by ``spec`` (Celery's ``-A`` rules: ``proj`` finds
    ``proj.celery:app``)."""
    name = app_spec(spec)
    if name == BUNDLED:
        from worker_app import app  # noqa: PLC0415 - the app reads the environment

        return app
    from celery import Celery  # noqa: PLC0415
    from celery.app.utils import find_app  # noqa: PLC0415

    try:
        found = find_app(name)
    except (ImportError, AttributeError) as exc:
        raise AppNotFoundError(
            f"cannot load the Celery app {name!r} (-A or {APP_VARIABLE}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(found, Celery):
        raise AppNotFoundError(f"{name!r} (-A or {APP_VARIABLE}) is not a Celery app")
    setup_django()
    if not is_configured(found):
        raise AppNotFoundError(
            f"the Celery app {name!r} is not configured for worker_app: call "
            f"worker_app.configure(app) where it is created"
        )
    return found
