"""Replay or delete a selection of dead letters (the console's bulk actions).

Each entry keeps the guarantees of one: a replay removes the entry only after its publish and
only if it is unchanged; a failure midway stops there, leaves every entry not yet done in
place and says how many were done. Entries go in batches (``replay.BATCH``): one round trip
publishes a batch, one atomic call removes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker_app.dlq.replay import BATCH, replay_batch
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
    """Apply ``action`` to the entries ``ids``, ``BATCH`` at a time, in that order: a batch's
    tasks are published in one round trip and its entries removed in one call
    (``replay_batch``); a delete removes a batch's entries in one call, each only if it is
    unchanged since it was read."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    result = BulkResult(action, len(ids))
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        found = {entry.id: entry for entry in store.get_many(batch)}
        entries = []
        for entry_id in batch:
            entry = found.get(entry_id)
            if entry is None or (action == "replay" and not entry.replayable):
                result.skipped.append(entry_id)
            else:
                entries.append(entry)
        try:
            if action == "delete":
                statuses = store.remove_many(entries)
            else:
                statuses = replay_batch(store, app, entries)
        except Exception as error:  # reported: this batch and the rest stay in place
            first = entries[0].id if entries else "?"
            result.error = f"{type(error).__name__}: {error} (in the batch from {first})"
            return result
        for entry, status in zip(entries, statuses, strict=True):
            if status == 1:
                result.done += 1
            elif action == "replay":
                result.kept += 1  # published, but it died again (or went) meanwhile
            else:
                result.skipped.append(entry.id)  # gone, or changed since it was read
    return result
