"""The console's Flask application.

Flask renders the pages on the server with Jinja2's autoescaping (a task argument
``<script>`` is shown as text); Flask-WTF checks a CSRF token on every change made with the
session cookie. Only admins change anything: a read-only user sees no button and gets 403 for
the POST. Every change is logged on ``worker_app.web.audit`` (who, what, how many).
The JSON API (``/api/...``) and ``/metrics`` take HTTP Basic credentials of the same users
instead of the session (``worker_app.web.api_auth``), so they are exempt from the CSRF check.
``create_console`` has no side effects: nothing connects before a request.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, redirect, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

from worker_app.dlq.store import DeadLetterStore
from worker_app.web import formatting, json_errors, request_metrics
from worker_app.web.api import api
from worker_app.web.api_dead_letters import api_dead_letters
from worker_app.web.auth import auth, login_required
from worker_app.web.broker_pages import broker_pages
from worker_app.web.context import EXTENSION, Console
from worker_app.web.credential_cache import CredentialCache
from worker_app.web.dead_letters import dead_letters
from worker_app.web.task_pages import task_pages
from worker_app.web.users import User

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
MIN_SECRET_KEY = 32


def create_console(
    store: DeadLetterStore,
    users: dict[str, User],
    secret_key: str,
    celery_app: Any,
    *,
    flower_url: str | None = None,
    control_timeout: float = 1.0,
    dlq_growth_window: float = 900.0,
    dlq_growth_limit: int | None = None,
) -> Flask:
    """The console for ``store`` with ``users``; ``celery_app`` publishes replays and is asked
    for its pools (catalogue), broker, workers (remote control, ``control_timeout`` seconds)
    and results; ``secret_key`` signs sessions and CSRF tokens; the pages link to Flower at
    ``flower_url`` when it is given. ``/api/health`` reports the dead letters of the last
    ``dlq_growth_window`` seconds, and fails when there are more than ``dlq_growth_limit``."""
    if len(secret_key) < MIN_SECRET_KEY:
        raise ValueError(f"the console's secret key has at least {MIN_SECRET_KEY} characters")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.extensions[EXTENSION] = Console(store, users, celery_app, flower_url, control_timeout,
                                        dlq_growth_window, dlq_growth_limit,
                                        CredentialCache(secret_key.encode()))  # fmt: skip
    csrf = CSRFProtect(app)
    for blueprint in (auth, dead_letters, broker_pages, task_pages):
        app.register_blueprint(blueprint)
    for blueprint in (api_dead_letters, api):  # HTTP Basic, never the session cookie
        csrf.exempt(blueprint)
        app.register_blueprint(blueprint)
    json_errors.install(app)
    formatting.install(app)
    request_metrics.install(app)

    @app.context_processor
    def links() -> dict[str, Any]:
        return {"flower_url": flower_url}

    @app.after_request
    def secure_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/")
    @login_required
    def home() -> Any:
        return redirect(url_for("dead_letters.index"))

    return app
