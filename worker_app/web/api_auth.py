"""HTTP Basic authentication for the JSON API and ``/metrics``.

The console's users and roles, checked on every request. A failure is a 401 in JSON *without*
``WWW-Authenticate: Basic``: no browser ever prompts for (and so caches) the credentials, so a
browser cannot be made to send them to the API from another site, which is why the API's POSTs
need no CSRF token. The session cookie is never looked at here. Verified credentials are
remembered for a minute (``worker_app.web.credential_cache``): a busy client does not pay a
scrypt check per request.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import g, request

from worker_app.web.context import console
from worker_app.web.json_errors import json_error
from worker_app.web.users import User


def basic_user() -> User | None:
    """The console user whose HTTP Basic credentials came with the request, if any."""
    credentials = request.authorization
    if credentials is None or credentials.type != "basic":
        return None
    parts = console()
    name, password = credentials.username or "", credentials.password or ""
    return parts.credentials.authenticate(parts.users, name, password)


def basic_auth_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Any console user (``g.user``); 401 otherwise."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = basic_user()
        if user is None:
            return json_error(401, "HTTP Basic credentials of a console user are required")
        g.user = user
        return view(*args, **kwargs)

    return wrapped


def basic_admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Changes: admins only (403 for a read-only user)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not g.user.admin:
            return json_error(403, f"{g.user.name} is read-only: only admins change anything")
        return view(*args, **kwargs)

    return basic_auth_required(wrapped)
