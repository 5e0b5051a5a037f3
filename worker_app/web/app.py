"""The console's Flask application: login, dead letters (list and entry pages).

Flask renders the pages on the server with Jinja2's autoescaping (a task argument
``<script>`` is shown as text); Flask-WTF checks a CSRF token on every change made with the
session cookie. ``create_console`` has no side effects: nothing connects before a request.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, abort, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

from worker_app.dlq.query import DEFAULT_PER_PAGE, DeadLetterFilter, FilterError, page_of
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError
from worker_app.web.users import User, authenticate

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_console(store: DeadLetterStore, users: dict[str, User], secret_key: str) -> Flask:
    """The console for ``store`` with ``users`` (``secret_key`` signs sessions and tokens)."""
    if len(secret_key) < 32:
        raise ValueError("the console's secret key has at least 32 characters")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    CSRFProtect(app)

    @app.after_request
    def secure_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = users.get(session.get("user", ""))
            if user is None:
                return redirect(url_for("login", next=request.full_path))
            g.user = user
            return view(*args, **kwargs)

        return wrapped

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = None
        if request.method == "POST":
            user = authenticate(
                users, request.form.get("name", ""), request.form.get("password", "")
            )
            if user is not None:
                session.clear()
                session["user"] = user.name
                target = request.args.get("next", "")
                # Only a path of this site (no scheme, no other host).
                safe = target.startswith("/") and not target.startswith("//")
                return redirect(target if safe else url_for("dead_letters"))
            error = "Unknown user or wrong password."
        return render_template("login.html", error=error), 401 if error else 200

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    @login_required
    def index() -> Any:
        return redirect(url_for("dead_letters"))

    @app.get("/dead-letters")
    @login_required
    def dead_letters() -> Any:
        params = request.args.to_dict()
        try:
            number = int(params.pop("page", "1"))
            per_page = int(params.pop("per_page", str(DEFAULT_PER_PAGE)))
            selection = DeadLetterFilter.from_params(params)
            page = page_of(store, selection, number=number, per_page=per_page)
        except (FilterError, ValueError) as error:
            return render_template("error.html", message=str(error)), 400
        return render_template(
            "dead_letters.html", page=page, selection=selection.as_params(), user=g.user
        )

    @app.get("/dead-letters/<entry_id>")
    @login_required
    def dead_letter(entry_id: str) -> Any:
        try:
            entry = store.get(entry_id)
        except UnknownEntryError:
            abort(404)
        return render_template("dead_letter.html", entry=entry, user=g.user)

    return app
