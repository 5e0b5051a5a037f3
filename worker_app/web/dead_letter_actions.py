"""Replay and delete of dead letters, one or a filtered selection, for the console's pages and
its API alike: the same checks and the same audit lines."""

from __future__ import annotations

from worker_app.dlq.bulk import ACTIONS, BulkResult, run_bulk
from worker_app.dlq.query import DeadLetterFilter, FilterError, matching_ids
from worker_app.dlq.replay import replay
from worker_app.web.audit import audit
from worker_app.web.context import Console
from worker_app.web.users import User


class StaleSelectionError(Exception):
    """The selection no longer holds the count that was confirmed: nothing was changed."""

    def __init__(self, found: int, expected: str) -> None:
        super().__init__(
            f"The selection now holds {found} entries, not the {expected} you confirmed: "
            "nothing was changed. Confirm again."
        )
        self.found = found


def replay_one(console: Console, user: User, entry_id: str) -> bool:
    """Publish the entry's task again, then remove the entry; False when it died again
    meanwhile and was kept (``UnknownEntryError``, ``NotReplayableError`` otherwise)."""
    found = console.store.get(entry_id)
    removed = replay(console.store, console.celery_app, found)
    audit.info("%s replayed dead letter %s (%s): 1 published, %d removed",
               user.name, entry_id, found.task_name, int(removed))  # fmt: skip
    return removed


def delete_one(console: Console, user: User, entry_id: str) -> None:
    """Remove one entry (``UnknownEntryError`` if there is none)."""
    console.store.remove(entry_id)
    audit.info("%s deleted dead letter %s: 1 removed", user.name, entry_id)


def parse_selection(params: dict[str, str]) -> tuple[str, DeadLetterFilter]:
    """The action and the filter of a bulk request (``FilterError`` when malformed)."""
    action = params.pop("action", "")
    if action not in ACTIONS:
        raise FilterError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    return action, DeadLetterFilter.from_params(params)


def run_selection(
    console: Console, user: User, action: str, selection: DeadLetterFilter, expected: str
) -> BulkResult:
    """Apply ``action`` to the entries ``selection`` matches when they are still ``expected``
    many (``StaleSelectionError`` otherwise)."""
    ids = matching_ids(console.store, selection)
    if not expected.isdigit() or int(expected) != len(ids):
        raise StaleSelectionError(len(ids), expected)
    result = run_bulk(console.store, console.celery_app, action, ids)
    stopped = f"; stopped: {result.error}" if result.error else ""
    audit.info(
        "%s %s %s: %d selected, %d done, %d kept, %d skipped%s", user.name, action,
        selection.as_params(), result.selected, result.done, result.kept, len(result.skipped),
        stopped,
    )  # fmt: skip
    return result


def describe(result: BulkResult) -> str:
    """What a bulk action did, in one sentence."""
    verb = "Replayed" if result.action == "replay" else "Deleted"
    parts = [f"{verb} {result.done} of {result.selected}"]
    if result.kept:
        parts.append(f"{result.kept} failed again meanwhile and were kept")
    if result.skipped:
        parts.append(f"{len(result.skipped)} skipped")
    if result.error:
        parts.append(f"stopped: {result.error}; the rest is in place")
    return "; ".join(parts) + "."
