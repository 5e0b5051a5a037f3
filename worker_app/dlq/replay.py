"""Publish dead-lettered tasks again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery import signals
from celery.app.amqp import AMQP
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu.serialization import dumps

from worker_app.amqp import GuardedSender
from worker_app.configuration import settings_of
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore
from worker_app.headers import FIRST_PUBLISHED_AT, REPLAY_COUNT, running_request, stamp_headers
from worker_app.message_size import EMPTY_EMBED, body_size, check, serialized_size, task_body


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

    Every message of the batch is built and measured (the size guard) before any is sent, so
    an entry too large to publish stops the batch before it publishes anything. Nothing is
    removed unless the whole batch was published: when the publish fails, every entry stays
    (some of their tasks may have reached Redis: replaying them again publishes those twice,
    never none)."""
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
        publishes: list[Callable[[], None]]
        if _fast_path_applies(app):
            publisher = ReplayPublisher(app, producer)
            messages = [publisher.message(entry) for entry in entries]
            publishes = [partial(publisher.publish, message) for message in messages]
        else:  # another task protocol or AMQP class: Celery's own path, message by message
            publishes = [partial(_publish_with_celery, app, entry, producer) for entry in entries]
        # Four commands at most per message (the message, its bell, the bell's trim, the
        # task-sent event): one flush for the whole batch. A batch is never retried (kombu):
        # no retry wrapper around each publish either.
        with producer.batch(max_size=4 * len(entries) + 8):
            for publish in publishes:
                publish()
    return store.remove_many(entries)


def _queue(app: Any, entry: DeadLetter) -> str:
    return entry.queue or str(app.conf.task_default_queue)


def _fast_path_applies(app: Any) -> bool:
    """Whether ``ReplayPublisher`` makes the message Celery would: protocol 2, worker_app's
    guarded sender, and Celery's own message and sender (no AMQP class that changes them)."""
    amqp = app.amqp
    return (
        int(app.conf.task_protocol) == 2
        and isinstance(amqp, GuardedSender)
        and all(getattr(type(amqp), name) is getattr(AMQP, name) for name in _CELERYS_OWN)
    )


#: What ``ReplayPublisher`` does in place of Celery's AMQP class (an app's own class may not
#: override any of them for it to apply).
_CELERYS_OWN = ("as_task_v2", "_create_task_sender", "create_task_message")


@dataclass
class ReplayMessage:
    """One replayed task's message, built and measured, ready to publish."""

    name: str
    body: tuple[Any, Any, dict[str, Any]]  # args, kwargs, embed
    data: str | bytes  # ``body`` serialized
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    queue: Any  # the kombu Queue


class ReplayPublisher:
    """The message ``app.amqp.create_task_message`` makes for a replay, published as
    ``app.amqp.send_task_message`` (its size guard and worker_app's headers included)
    publishes it, without the per-message work that is the same for every entry: the app's
    settings, the queue's routing and the origin are read once, the body is serialized once
    (the size guard measures the string kombu sends), and the short argument lists dead
    tasks have are shown (``argsrepr``) without Celery's streaming ``saferepr``.

    No ``send_task``'s routing and result-backend hooks, which a replay to a named queue does
    not use, and no task-sent event: at Redis speed a bulk replay would flood the event
    stream; the worker's task-received event shows the task as for any other. The
    ``before_task_publish``/``after_task_publish`` signals are sent as Celery sends them."""

    def __init__(self, app: Any, producer: Any) -> None:
        conf = app.conf
        amqp = app.amqp
        self.app = app
        self.producer = producer
        self.serializer: str = conf.task_serializer
        self.compression: str | None = conf.task_compression
        self.limit: int = amqp.max_message_bytes
        self.delivery_mode = conf.task_default_delivery_mode
        self.retry_policy: dict[str, Any] = dict(conf.task_publish_retry_policy)
        self.default_exchange = amqp.default_exchange
        self.default_rkey = conf.task_default_routing_key
        self.queues = amqp.queues
        self.argsrepr_maxsize: int = amqp.argsrepr_maxsize
        self.kwargsrepr_maxsize: int = amqp.kwargsrepr_maxsize
        self.maxlevels: int = conf.task_repr_maxlevels
        self.origin = anon_nodename()
        self.routes: dict[str, tuple[Any, Any, Any]] = {}
        self.request = running_request()  # a replay from inside a task: that task's
        self.running_id = getattr(self.request, "id", None)

    def message(self, entry: DeadLetter) -> ReplayMessage:
        """``entry``'s task message: Celery's protocol 2 headers, worker_app's publish headers,
        the body serialized and within the size limit (``MessageTooLargeError`` if not)."""
        name = str(entry.task_name)
        task_id = entry.task_id or entry.id
        queue_name = _queue(self.app, entry)
        args: Any = entry.args or ()  # as as_task_v2 has them (``()`` shows as ``()``)
        kwargs: Any = entry.kwargs or {}
        if not isinstance(args, (list, tuple)):
            raise TypeError("task args must be a list or tuple")
        if not isinstance(kwargs, dict):
            raise TypeError("task keyword arguments must be a mapping")
        body = (args, kwargs, dict(EMPTY_EMBED))
        # What as_task_v2 makes (the same keys in the same order: the same bytes).
        headers: dict[str, Any] = {
            "lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": short_repr(args, self.argsrepr_maxsize, self.maxlevels),
            "kwargsrepr": short_repr(kwargs, self.kwargsrepr_maxsize, self.maxlevels),
            "origin": self.origin, "ignore_result": False, "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        }  # fmt: skip
        content_type, encoding, data = dumps(body, serializer=self.serializer)
        # The guard (GuardedSender): measured unless the running task publishes itself again.
        if self.running_id is None or self.running_id != task_id:
            check(name, serialized_size(data, self.compression), self.limit)
        stamp_headers(headers, queue_name, request=self.request)
        headers[REPLAY_COUNT] = entry.replay_count + 1
        if entry.first_published_at is not None:
            headers[FIRST_PUBLISHED_AT] = entry.first_published_at
        properties: dict[str, Any] = {"correlation_id": task_id, "reply_to": ""}
        if entry.priority is not None:
            properties["priority"] = entry.priority
        return ReplayMessage(name, body, data, content_type, encoding, headers, properties,
                             self.queues[queue_name])  # fmt: skip

    def _route(self, queue: Any) -> tuple[Any, Any, Any]:
        """Exchange, routing key, delivery mode of a publish to ``queue`` (as Celery's
        ``send_task_message`` routes one to a named queue)."""
        route = self.routes.get(queue.name)
        if route is None:
            exchange: Any = None
            routing_key: Any = None
            delivery_mode = getattr(queue.exchange, "delivery_mode", None) or self.delivery_mode
            exchange_type = getattr(queue.exchange, "type", None) or "direct"
            if exchange_type == "direct":
                exchange, routing_key = "", queue.name
            else:
                exchange = queue.exchange.name or self.default_exchange
                routing_key = queue.routing_key or self.default_rkey
            route = self.routes[queue.name] = (exchange, routing_key, delivery_mode)
        return route

    def publish(self, message: ReplayMessage) -> None:
        """Publish ``message`` (inside the producer's batch, it is sent when the batch is)."""
        exchange, routing_key, delivery_mode = self._route(message.queue)
        serialized: dict[str, Any] = {}
        if signals.before_task_publish.receivers:
            # A receiver may change the body: kombu serializes it after, as for any publish.
            signals.before_task_publish.send(
                sender=message.name, body=message.body, exchange=exchange,
                routing_key=routing_key, declare=[], headers=message.headers,
                properties=message.properties, retry_policy=self.retry_policy,
            )  # fmt: skip
            body: Any = message.body
        else:
            body = message.data
            serialized = {"content_type": message.content_type,
                          "content_encoding": message.content_encoding}  # fmt: skip
        properties = dict(message.properties)
        priority = properties.pop("priority", 0)
        self.producer.publish(
            body, exchange=exchange, routing_key=routing_key, serializer=self.serializer,
            compression=self.compression, retry=False, retry_policy=self.retry_policy,
            delivery_mode=delivery_mode, declare=[], headers=message.headers, timeout=None,
            confirm_timeout=None, priority=priority, **serialized, **properties,
        )  # fmt: skip
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(
                sender=message.name, body=message.body, headers=message.headers,
                exchange=exchange, routing_key=routing_key,
            )  # fmt: skip


def short_repr(value: Any, maxlen: int, maxlevels: int) -> str:
    """Celery's ``saferepr(value, maxlen, maxlevels)``: for a flat list of numbers (or None) or
    an empty dict, what it makes, without its per-token streaming; otherwise saferepr."""
    if type(value) is list and all(type(item) in _PLAIN for item in value):
        shown = "[" + ", ".join(map(str, value)) + "]"
        if len(shown) < maxlen:
            return shown
    elif type(value) is dict and not value:
        return "{}"
    return str(saferepr(value, maxlen, maxlevels=maxlevels))


#: Types whose ``str`` is what saferepr shows (numbers, shown with ``str``; None, by ``repr``).
_PLAIN = frozenset({int, float, bool, type(None)})


def _publish_with_celery(app: Any, entry: DeadLetter, producer: Any) -> None:
    """Celery's task message and its publish (the size guard and worker_app's headers
    included), message by message: the reference ``ReplayPublisher`` matches."""
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
