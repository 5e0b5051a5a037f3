"""The dead-letter queue: entries, their Redis store, capture and replay."""

from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore, DlqStats, UnknownEntryError

__all__ = ["DeadLetter", "DeadLetterStore", "DlqStats", "UnknownEntryError"]
