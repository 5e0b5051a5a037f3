"""Filtered, paginated views of the dead-letter store (the console's list, bulk selections).

A filter matches on the store's ``summary`` hash (queue, task, reason, exception class per
entry) and on the index's failure times, so a page of 10,000 entries reads one sorted-set range,
one HMGET of short strings, and only the page's own entries in full.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker_app.dlq.entry import REASONS, DeadLetter
from worker_app.dlq.store import FIELD_SEP, DeadLetterStore

#: The largest page a caller may ask for.
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 50
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TEXT_LIMIT = 200
SEP = FIELD_SEP.encode()


class FilterError(ValueError):
    """A filter or page parameter is malformed (one line that says which and why)."""


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise FilterError(f"{text!r} is not a duration like 90s, 15m, 12h, 7d or 2w")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which entries: each set field must match (``exception`` matches the class name with or
    without its module; ``older_than``/``newer_than`` are seconds since the failure)."""

    queue: str | None = None
    task: str | None = None
    reason: str | None = None
    exception: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    task_id: str | None = None

    PARAMETERS = ("queue", "task", "reason", "exception", "older_than", "newer_than", "task_id")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> DeadLetterFilter:
        """A filter from query parameters (empty values ignored); unknown names or malformed
        values raise ``FilterError``."""
        unknown = sorted(set(params) - set(cls.PARAMETERS))
        if unknown:
            raise FilterError(f"unknown filter {unknown[0]!r}: one of {', '.join(cls.PARAMETERS)}")
        values = {name: value.strip() for name, value in params.items() if value.strip()}
        for name, value in values.items():
            if len(value) > _TEXT_LIMIT:
                raise FilterError(f"{name} is longer than {_TEXT_LIMIT} characters")
        reason = values.get("reason")
        if reason is not None and reason not in REASONS:
            raise FilterError(f"unknown reason {reason!r}: one of {', '.join(REASONS)}")
        ages = {k: parse_duration(values[k]) for k in ("older_than", "newer_than") if k in values}
        return cls(
            queue=values.get("queue"),
            task=values.get("task"),
            reason=reason,
            exception=values.get("exception"),
            task_id=values.get("task_id"),
            **ages,
        )

    def matches(self, summary: bytes) -> bool:
        """Whether an entry whose ``summary`` field (queue, task, reason and exception class,
        separated by the store's FIELD_SEP) is ``summary`` passes the text fields."""
        queue, task, reason, exception = [*summary.split(SEP), b"", b"", b""][:4]
        if self.queue is not None and queue != self.queue.encode():
            return False
        if self.task is not None and task != self.task.encode():
            return False
        if self.reason is not None and reason != self.reason.encode():
            return False
        if self.exception is not None:
            wanted = self.exception.encode()
            if exception != wanted and exception.rpartition(b".")[2] != wanted:
                return False
        return True

    def as_params(self) -> dict[str, str]:
        """The filter as query parameters (the set fields only)."""
        params = {}
        for name in self.PARAMETERS:
            value = getattr(self, name)
            if value is not None:
                params[name] = f"{value:g}s" if isinstance(value, float) else str(value)
        return params


@dataclass(frozen=True)
class Page:
    """One page of a filtered listing, newest first."""

    entries: list[DeadLetter]
    total: int  # entries matching the filter
    number: int
    per_page: int
    ids: list[str] = field(default_factory=list, repr=False)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def matching_ids(
    store: DeadLetterStore, selection: DeadLetterFilter, now: float | None = None
) -> list[str]:
    """Every id ``selection`` matches, newest first."""
    now = time.time() if now is None else now
    if selection.task_id is not None:
        candidates = [
            (e.id, e.failed_at) for e in store.get_many([selection.task_id])
        ]  # an entry's id is its task id (a digest for a message without one)
        ids = [entry_id for entry_id, failed_at in candidates
               if _in_range(selection, failed_at, now)]  # fmt: skip
    else:
        after = None if selection.newer_than is None else now - selection.newer_than
        before = None if selection.older_than is None else now - selection.older_than
        ids = store.ids(failed_after=after, failed_before=before)
    if not any((selection.queue, selection.task, selection.reason, selection.exception)):
        return ids
    summaries = store.raw_summaries(ids)
    return [
        entry_id
        for entry_id, summary in zip(ids, summaries, strict=True)
        if summary is not None and selection.matches(summary)
    ]


def _in_range(selection: DeadLetterFilter, failed_at: float, now: float) -> bool:
    if selection.newer_than is not None and failed_at < now - selection.newer_than:
        return False
    return not (selection.older_than is not None and failed_at > now - selection.older_than)


def page_of(
    store: DeadLetterStore, selection: DeadLetterFilter, number: int = 1,
    per_page: int = DEFAULT_PER_PAGE, now: float | None = None,
) -> Page:  # fmt: skip
    """Page ``number`` (from 1) of the entries ``selection`` matches, newest first."""
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise FilterError(f"per_page must be between 1 and {MAX_PER_PAGE}, not {per_page}")
    if number < 1:
        raise FilterError(f"page must be 1 or more, not {number}")
    ids = matching_ids(store, selection, now)
    chosen = ids[(number - 1) * per_page : number * per_page]
    return Page(store.get_many(chosen), len(ids), number, per_page, chosen)


def requested_page(store: DeadLetterStore, params: dict[str, str]) -> tuple[DeadLetterFilter, Page]:
    """The filter and the page a request's query parameters ask for (``page``, ``per_page`` and
    the filters); ``FilterError`` when one is malformed."""
    rest = dict(params)
    try:
        number = int(rest.pop("page", "1"))
        per_page = int(rest.pop("per_page", str(DEFAULT_PER_PAGE)))
    except ValueError as error:
        raise FilterError(f"page and per_page are whole numbers ({error})") from None
    selection = DeadLetterFilter.from_params(rest)
    return selection, page_of(store, selection, number=number, per_page=per_page)
