"""The JSON API for dead letters: the list with the pages' filters, one entry, replay and
delete of one entry or of a filtered selection (with a dry run and the count it gave)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, g, jsonify, request

from worker_app.dlq.query import FilterError, matching_ids, requested_page
from worker_app.dlq.replay import NotReplayableError
from worker_app.dlq.store import UnknownEntryError
from worker_app.web import dead_letter_actions as actions
from worker_app.web.api_auth import basic_admin_required, basic_auth_required
from worker_app.web.context import console
from worker_app.web.json_errors import json_error

api_dead_letters = Blueprint("api_dead_letters", __name__, url_prefix="/api/dead-letters")


def json_body() -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``; anything else raises FilterError)."""
    if not request.get_data():
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise FilterError("the body must be a JSON object")
    return body


@api_dead_letters.get("")
@basic_auth_required
def index() -> Any:
    try:
        selection, page = requested_page(console().store, request.args.to_dict())
    except FilterError as error:
        return json_error(400, str(error))
    return jsonify(total=page.total, page=page.number, pages=page.pages, per_page=page.per_page,
                   filter=selection.as_params(),
                   entries=[asdict(entry) for entry in page.entries])  # fmt: skip


@api_dead_letters.get("/<entry_id>")
@basic_auth_required
def entry(entry_id: str) -> Any:
    try:
        return jsonify(asdict(console().store.get(entry_id)))
    except UnknownEntryError as error:
        return json_error(404, str(error))


@api_dead_letters.post("/<entry_id>/replay")
@basic_admin_required
def replay_one(entry_id: str) -> Any:
    try:
        removed = actions.replay_one(console(), g.user, entry_id)
    except UnknownEntryError as error:
        return json_error(404, str(error))
    except NotReplayableError as error:
        return json_error(409, str(error))
    return jsonify(id=entry_id, published=True, removed=removed)


@api_dead_letters.post("/<entry_id>/delete")
@basic_admin_required
def delete_one(entry_id: str) -> Any:
    try:
        actions.delete_one(console(), g.user, entry_id)
    except UnknownEntryError as error:
        return json_error(404, str(error))
    return jsonify(id=entry_id, removed=True)


@api_dead_letters.post("/bulk")
@basic_admin_required
def bulk() -> Any:
    """``{"action": "replay"|"delete", "filter": {...}, "dry_run": true}`` counts the selection;
    without ``dry_run`` it runs when the selection still holds ``expected`` entries (409 if not).
    """
    try:
        body = json_body()
        unknown = sorted(set(body) - {"action", "filter", "dry_run", "expected"})
        if unknown:
            raise FilterError(f"unknown field {unknown[0]!r}: action, filter, dry_run, expected")
        raw_filter = body.get("filter") or {}
        if not isinstance(raw_filter, dict) or not all(
            isinstance(value, str) for value in raw_filter.values()
        ):
            raise FilterError("filter must be an object of strings, as the list's parameters")
        if not isinstance(body.get("action"), str):
            raise FilterError("action must be one of replay, delete")
        action, selection = actions.parse_selection({**raw_filter, "action": body["action"]})
        dry_run, expected = body.get("dry_run", False), body.get("expected")
        if not isinstance(dry_run, bool):
            raise FilterError("dry_run must be true or false")
        if not dry_run and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise FilterError("expected (the dry run's count) must be an integer")
    except FilterError as error:
        return json_error(400, str(error))
    described = {"action": action, "filter": selection.as_params()}
    if dry_run:
        count = len(matching_ids(console().store, selection))
        return jsonify(**described, dry_run=True, count=count)
    try:
        result = actions.run_selection(console(), g.user, action, selection, str(expected))
    except actions.StaleSelectionError as error:
        return json_error(409, str(error), count=error.found)
    body = {**described, "dry_run": False, "selected": result.selected, "done": result.done,
            "kept": result.kept, "skipped": result.skipped, "error": result.error,
            "message": actions.describe(result)}  # fmt: skip
    return jsonify(body), 503 if result.error else 200
