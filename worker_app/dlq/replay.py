"""Publish dead-lettered tasks again."""

from __future__ import annotations

from typing import Any

from worker_app.configuration import settings_of
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore
from worker_app.headers import FIRST_PUBLISHED_AT, REPLAY_COUNT
from worker_app.message_size import body_size, task_body


class NotReplayableError(ValueError):
    """The entry holds no task that can be published (e.g. an undecodable body)."""


def oversized(app: Any, entries: list[DeadLetter]) -> tuple[int, list[tuple[str, int]]]:
    """The app's message size limit, and ``(id, bytes)`` of each entry over it.

    ``dlq replay`` checks every entry before it publishes any, so a batch with
    one entry the size guard would refuse changes nothing.
    """
    settings = settings_of(app)
    limit = settings.max_message_bytes
    serializer, compression = app.conf.task_serializer, app.conf.task_compression
    over = []
    for entry in entries:
        size = body_size(task_body(entry.args, entry.kwargs), serializer, compression)
        if size > limit:
            over.append((entry.id, size))
    return limit, over


#: Entries published in one round trip and removed in one call (``replay_batch``).
BATCH = 500


def replay(store: DeadLetterStore, app: Any, entry: DeadLetter) -> bool:
    """Publish ``entry``'s task to its original queue with its original arguments
    and task id, with a fresh retry budget; remove the entry only once the
    publish succeeded. Returns False when the entry changed meanwhile (the
    task died again already) and was therefore kept.
    """
    return replay_batch(store, app, [entry]) == [1]


def replay_batch(store: DeadLetterStore, app: Any, entries: list[DeadLetter]) -> list[int]:
    """``replay`` for many entries: every task published in one round trip (kombu's publish
    batch, which also waits for the replicas a publish must reach), then the entries removed
    in one atomic call, each only if it is unchanged. Per entry, in order: 1 replayed and
    removed, -1 replayed but it changed meanwhile (kept), 0 replayed but already gone.

    Nothing is removed unless the whole batch was published: when the publish fails, every
    entry stays (some of their tasks may have reached Redis: replaying them again publishes
    those twice, never none)."""
    for entry in entries:
        if not entry.replayable:
            raise NotReplayableError(
                f"entry {entry.id} ({entry.reason}) holds no task that can be published again"
            )
    if not entries:
        return []
    with app.producer_or_acquire() as producer:
        # Each queue declared once, not at every publish of the batch.
        queues = {_queue(app, entry) for entry in entries}
        for name in sorted(queues):
            producer.maybe_declare(app.amqp.queues[name])
        # Four commands at most per message (the message, its bell, the bell's trim, the
        # task-sent event): one flush for the whole batch. A batch is never retried (kombu):
        # no retry wrapper around each publish either.
        with producer.batch(max_size=4 * len(entries) + 8):
            for entry in entries:
                _publish(app, entry, producer)
    return store.remove_many(entries)


def _queue(app: Any, entry: DeadLetter) -> str:
    return entry.queue or str(app.conf.task_default_queue)


def _publish(app: Any, entry: DeadLetter, producer: Any) -> None:
    """Celery's task message and its publish (the size guard and worker_app's headers
    included) without ``send_task``'s routing and result-backend hooks, which a replay to a
    named queue does not use, and without a task-sent event: at Redis speed a bulk replay
    would flood the event stream; the worker's task-received event shows the task as for
    any other."""
    headers: dict[str, Any] = {REPLAY_COUNT: entry.replay_count + 1}
    if entry.first_published_at is not None:
        headers[FIRST_PUBLISHED_AT] = entry.first_published_at
    options: dict[str, Any] = {}
    if entry.priority is not None:
        options["priority"] = entry.priority
    task_id = entry.task_id or entry.id
    message = app.amqp.create_task_message(
        task_id, entry.task_name, entry.args, entry.kwargs, retries=0, create_sent_event=False
    )
    app.amqp.send_task_message(
        producer, entry.task_name, message, queue=_queue(app, entry), headers=headers,
        declare=[], retry=False, **options,
    )  # fmt: skip
