"""Replay or delete a selection of dead letters (the console's bulk actions).

Each entry keeps the guarantees of one: a replay removes the entry only after its publish and
only if it is unchanged; a failure midway stops there, leaves every entry not yet done in
place and says how many were done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker_app.dlq.replay import NotReplayableError, replay
from worker_app.dlq.store import DeadLetterStore

ACTIONS = ("replay", "delete")


@dataclass
class BulkResult:
    """What a bulk action did."""

    action: str
    selected: int
    done: int = 0  # replayed and removed, or deleted
    kept: int = 0  # replayed, but changed meanwhile (died again): kept
    skipped: list[str] = field(default_factory=list)  # gone meanwhile, or not replayable
    error: str | None = None  # why it stopped early


def run_bulk(store: DeadLetterStore, app: Any, action: str, ids: list[str]) -> BulkResult:
    """Apply ``action`` to the entries ``ids``, one by one, in that order."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    result = BulkResult(action, len(ids))
    for start in range(0, len(ids), 500):
        batch = ids[start : start + 500]
        entries = {entry.id: entry for entry in store.get_many(batch)}
        for entry_id in batch:
            entry = entries.get(entry_id)
            if entry is None:
                result.skipped.append(entry_id)
                continue
            try:
                if action == "delete":
                    removed = store.remove(entry_id, expected=entry)
                else:
                    removed = replay(store, app, entry)
            except NotReplayableError:
                result.skipped.append(entry_id)
                continue
            except Exception as error:  # reported: the rest stays in place
                result.error = f"{type(error).__name__}: {error} (at {entry_id})"
                return result
            if removed:
                result.done += 1
            else:
                result.kept += 1
    return result
