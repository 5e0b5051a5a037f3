"""The console's dead-letter pages: the filtered list, an entry, replay and delete of one
entry or of a filtered selection (a confirmation page first, which is also the dry run)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from worker_app.dlq.query import FilterError, matching_ids, requested_page
from worker_app.dlq.replay import NotReplayableError
from worker_app.dlq.store import UnknownEntryError
from worker_app.web import dead_letter_actions as actions
from worker_app.web.auth import admin_required, login_required
from worker_app.web.context import console

dead_letters = Blueprint("dead_letters", __name__)


@dead_letters.get("/dead-letters")
@login_required
def index() -> Any:
    try:
        selection, page = requested_page(console().store, request.args.to_dict())
    except FilterError as error:
        return render_template("error.html", message=str(error), user=g.user), 400
    return render_template(
        "dead_letters.html", page=page, selection=selection.as_params(), user=g.user
    )


@dead_letters.get("/dead-letters/<entry_id>")
@login_required
def entry(entry_id: str) -> Any:
    try:
        found = console().store.get(entry_id)
    except UnknownEntryError:
        abort(404)
    return render_template("dead_letter.html", entry=found, user=g.user)


@dead_letters.post("/dead-letters/<entry_id>/replay")
@admin_required
def replay_one(entry_id: str) -> Any:
    try:
        removed = actions.replay_one(console(), g.user, entry_id)
    except UnknownEntryError:
        abort(404)
    except NotReplayableError as error:
        return render_template("error.html", message=str(error), user=g.user), 409
    flash(f"Replayed {entry_id}." if removed else
          f"Replayed {entry_id}; it failed again meanwhile and was kept.")  # fmt: skip
    return redirect(url_for("dead_letters.index"))


@dead_letters.post("/dead-letters/<entry_id>/delete")
@admin_required
def delete_one(entry_id: str) -> Any:
    try:
        actions.delete_one(console(), g.user, entry_id)
    except UnknownEntryError:
        abort(404)
    flash(f"Deleted {entry_id}.")
    return redirect(url_for("dead_letters.index"))


@dead_letters.get("/dead-letters/bulk")
@admin_required
def bulk_confirm() -> Any:
    """What a bulk action would change (the dry run), with the form that does it."""
    try:
        action, selection = actions.parse_selection(request.args.to_dict())
    except FilterError as error:
        return render_template("error.html", message=str(error), user=g.user), 400
    count = len(matching_ids(console().store, selection))
    return render_template("bulk_confirm.html", action=action, count=count,
                           selection=selection.as_params(), user=g.user)  # fmt: skip


@dead_letters.post("/dead-letters/bulk")
@admin_required
def bulk_run() -> Any:
    """Run a confirmed bulk action; refused when the selection changed since the confirmation."""
    params = request.form.to_dict()
    params.pop("csrf_token", None)
    expected = params.pop("expected", "")
    try:
        action, selection = actions.parse_selection(params)
        result = actions.run_selection(console(), g.user, action, selection, expected)
    except FilterError as error:
        return render_template("error.html", message=str(error), user=g.user), 400
    except actions.StaleSelectionError as error:
        return render_template("error.html", message=str(error), user=g.user), 409
    flash(actions.describe(result))
    query: dict[str, Any] = selection.as_params()
    return redirect(url_for("dead_letters.index", **query))
