"""The dead-letter entry: everything needed to understand and replay a dead task."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

#: Why a message was dead-lettered.
REASONS = (
    "retries_exhausted",  # a retryable error kept failing until max_retries
    "non_retryable",  # an error the task declares non-retryable
    "time_limit",  # soft or hard time limit
    "unknown_task",  # no task of that name is registered on the worker
    "undecodable",  # the body could not be decoded (bad bytes, refused content type)
    "invalid_message",  # not a Celery task message at all
)

#: Reasons whose entries carry a task that can be published again.
REPLAYABLE_REASONS = frozenset({"retries_exhausted", "non_retryable", "time_limit", "unknown_task"})


class EntryFormatError(ValueError):
    """Stored bytes are not a dead-letter entry."""


@dataclass
class DeadLetter:
    """One dead-lettered message. ``id`` is the task id (or a digest of the raw
    message when it has none), so writing the same death twice is one entry."""

    id: str
    reason: str
    task_name: str | None
    task_id: str | None
    queue: str | None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: str | None = None
    retries: int = 0
    first_published_at: float | None = None
    failed_at: float = 0.0
    hostname: str | None = None
    replay_count: int = 0
    # The raw body (for messages that could not be decoded), as text.
    raw_body: str | None = None
    content_type: str | None = None
    priority: int | None = None
    # The message's headers as the worker received them (``capture.recorded_headers``).
    headers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {self.reason!r}")

    @property
    def replayable(self) -> bool:
        """Whether ``dlq replay`` can publish this entry again."""
        return self.reason in REPLAYABLE_REASONS and bool(self.task_name) and self.raw_body is None

    def to_json(self) -> str:
        """Compact JSON, keys sorted (stable bytes for compare-and-delete). The fields as they
        are (``asdict``'s deep copy gives the same JSON, several times slower)."""
        return _ENCODER.encode({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeadLetter:
        """Parse an entry written by ``to_json`` (unknown keys are ignored)."""
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise EntryFormatError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EntryFormatError("not a JSON object")
        try:
            return cls(**{key: value for key, value in data.items() if key in _FIELDS})
        except (TypeError, ValueError) as exc:
            raise EntryFormatError(str(exc)) from None


#: The entry's field names (``fields`` walks the dataclass at each call).
_FIELDS = frozenset(field.name for field in fields(DeadLetter))
#: ``json.dumps(..., sort_keys=True, separators=(",", ":"), default=repr)``, made once.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)
