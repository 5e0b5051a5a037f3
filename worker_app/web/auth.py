"""Logging in and out of the console, and the decorators that guard its views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for

from worker_app.web.context import console
from worker_app.web.users import authenticate

auth = Blueprint("auth", __name__)


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages for logged-in users (``g.user``); others go to the login page."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = console().users.get(session.get("user", ""))
        if user is None:
            return redirect(url_for("auth.login", next=request.full_path))
        g.user = user
        return view(*args, **kwargs)

    return wrapped


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Changes: admins only (403 for a read-only user)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not g.user.admin:
            abort(403)
        return view(*args, **kwargs)

    return login_required(wrapped)


@auth.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        name, password = request.form.get("name", ""), request.form.get("password", "")
        user = authenticate(console().users, name, password)
        if user is not None:
            session.clear()
            session["user"] = user.name
            target = request.args.get("next", "")
            # Only a path of this site (no scheme, no other host).
            safe = target.startswith("/") and not target.startswith("//")
            return redirect(target if safe else url_for("dead_letters.index"))
        error = "Unknown user or wrong password."
    return render_template("login.html", error=error), 401 if error else 200


@auth.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
