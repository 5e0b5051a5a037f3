"""The broker-side exporter: what is waiting in Redis, read at each scrape.

One pipelined round trip per scrape reads every queue at every priority step
(``LLEN`` is O(1)) and the unacked hash size (``worker_app.broker_state``, which the
console reads too), a second the DLQ counts. The unacked messages themselves (to split
them by queue and to count ETA/countdown tasks, which on Redis wait there, reserved by a
worker) are scanned only while there are at most ``unacked_scan_limit`` of them, so a
scrape's cost stays bounded.
Task-sent counts and the worker nodes' liveness come from Celery's event
stream (``task-sent`` from producers with ``task_send_sent_event``, the
workers' heartbeats), consumed by a background thread; the consumers of each
queue from Celery's remote control, asked by another thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery.utils.nodenames import nodesplit
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from worker_app.broker_state import BrokerState, ConsumerHeartbeats, QueueLayout, read_broker
from worker_app.dlq.store import DeadLetterStore
from worker_app.metrics.beat_lock import beat_lock_collector
from worker_app.pools import Catalogue
from worker_app.worker_nodes import live_nodes

logger = logging.getLogger("worker_app.exporter")


class BrokerCollector(Collector):
    """Queue lengths (per priority), unacked and scheduled counts, DLQ depth."""

    def __init__(
        self,
        client: redis.Redis,
        layout: QueueLayout,
        dlq: DeadLetterStore,
        unacked_scan_limit: int = 10_000,
    ) -> None:
        self.client = client
        self.layout = layout
        self.dlq = dlq
        self.unacked_scan_limit = unacked_scan_limit
        self.last_duration = 0.0

    def collect(self) -> Iterator[Any]:
        """Read everything in one pipeline (plus a bounded unacked scan)."""
        started = time.perf_counter()
        up = GaugeMetricFamily(
            "worker_app_exporter_broker_up", "1 if the last scrape reached Redis."
        )
        try:
            yield from self._collect()
        except redis.RedisError as exc:
            logger.warning("scrape failed: %s", exc)
            up.add_metric([], 0.0)
        else:
            up.add_metric([], 1.0)
        yield up
        self.last_duration = time.perf_counter() - started
        duration = GaugeMetricFamily(
            "worker_app_exporter_scrape_duration_seconds", "Duration of the last broker scrape."
        )
        duration.add_metric([], self.last_duration)
        yield duration

    def _collect(self) -> Iterator[Any]:
        state = read_broker(self.client, self.layout, self.unacked_scan_limit)
        stats = self.dlq.stats()
        yield from _consumer_metrics(state.read_at, state.consumers)

        by_priority = GaugeMetricFamily(
            "worker_app_queue_length_by_priority",
            "Messages waiting in a queue at one priority step.",
            labels=["queue_name", "priority"],
        )
        total = GaugeMetricFamily(
            "celery_queue_length",
            "Messages waiting in a queue, all priority steps summed.",
            labels=["queue_name"],
        )
        for queue in state.queues.values():
            for step, length in queue.by_priority.items():
                by_priority.add_metric([queue.name, str(step)], float(length))
            total.add_metric([queue.name], float(queue.waiting))
        yield total
        yield by_priority

        unacked = GaugeMetricFamily(
            "worker_app_broker_unacked_messages",
            "Messages delivered to workers and not yet acknowledged (running or awaiting an ETA).",
        )
        unacked.add_metric([], float(state.unacked_total))
        yield unacked
        yield from _unacked_detail(state)

        dlq = GaugeMetricFamily(
            "worker_app_dlq_length",
            "Dead-letter entries by original queue and task.",
            labels=["queue_name", "name"],
        )
        for (queue_name, task), count in sorted(stats.by_queue_and_task.items()):
            dlq.add_metric([queue_name or "unknown", task or "unknown"], float(count))
        yield dlq
        dlq_sum = GaugeMetricFamily("worker_app_dlq_entries", "Dead-letter entries in all.")
        dlq_sum.add_metric([], float(stats.total))
        yield dlq_sum
        age = GaugeMetricFamily(
            "worker_app_dlq_oldest_entry_age_seconds",
            "Age of the oldest dead-letter entry (0 when empty).",
        )
        oldest = stats.oldest_failed_at
        age.add_metric([], max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        yield age


def _unacked_detail(state: BrokerState) -> Iterator[Any]:
    skipped = GaugeMetricFamily(
        "worker_app_exporter_unacked_scan_skipped",
        "1 when there were too many unacked messages to split them by queue.",
    )
    if state.unacked_by_queue is None or state.scheduled_by_queue is None:
        skipped.add_metric([], 1.0)
        yield skipped
        return
    skipped.add_metric([], 0.0)
    yield skipped
    by_queue = GaugeMetricFamily(
        "worker_app_queue_unacked",
        "Unacknowledged messages by the queue they came from.",
        labels=["queue_name"],
    )
    eta = GaugeMetricFamily(
        "worker_app_queue_scheduled",
        "Unacknowledged messages with an ETA or countdown (held by a worker until due).",
        labels=["queue_name"],
    )
    for queue in sorted(state.unacked_by_queue):
        by_queue.add_metric([queue], float(state.unacked_by_queue[queue]))
        eta.add_metric([queue], float(state.scheduled_by_queue.get(queue, 0)))
    yield by_queue
    yield eta


def _consumer_metrics(now: float, heartbeats: ConsumerHeartbeats) -> Iterator[Any]:
    """Consumers alive, the age of the oldest heartbeat, consumers found dead, and the
    messages returned from them by queue (counters Redis keeps: worker_app.broker_transport)."""
    consumers = GaugeMetricFamily(
        "worker_app_consumers_alive",
        "Consuming channels whose heartbeat is within the grace period.",
    )
    consumers.add_metric([], float(heartbeats.alive))
    yield consumers
    age = GaugeMetricFamily(
        "worker_app_consumer_oldest_heartbeat_age_seconds",
        "Age of the oldest registered consumer heartbeat (0 when none).",
    )
    oldest = heartbeats.oldest_heartbeat_at
    age.add_metric([], max(0.0, now - oldest) if oldest is not None else 0.0)
    yield age
    returned = CounterMetricFamily(
        "worker_app_consumer_restored_messages",
        "Messages returned to their queue because the consumer holding them died.",
        labels=["queue_name"],
    )
    for queue, count in heartbeats.restored.items():
        returned.add_metric([queue], float(count))
    yield returned
    died = CounterMetricFamily(
        "worker_app_consumers_died",
        "Consumers found silent past the grace period (a worker crashed or was cut off).",
    )
    died.add_metric([], float(heartbeats.died))
    yield died


class CatalogueCollector(Collector):
    """The pool catalogue as series, so rules and dashboards need no pool names:
    ``worker_app_pool_info{pool, queue_name}`` (1 for each pool and queue it consumes) and
    ``worker_app_queue_wait_slo_seconds{pool, queue_name, severity}`` (the wait SLO)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def collect(self) -> Iterator[Any]:
        """Static series, served whether or not Redis answers."""
        info = GaugeMetricFamily(
            "worker_app_pool_info",
            "1 for each pool of the catalogue and each queue it consumes.",
            labels=["pool", "queue_name"],
        )
        slo = GaugeMetricFamily(
            "worker_app_queue_wait_slo_seconds",
            "The p95 queue-wait objective of a queue (its pool's wait_slo_seconds).",
            labels=["pool", "queue_name", "severity"],
        )
        for pool in self.catalogue.pools:
            for queue in pool.queues:
                info.add_metric([pool.name, queue], 1.0)
                slo.add_metric([pool.name, queue, pool.wait_slo_severity], pool.wait_slo_seconds)
        yield info
        yield slo


class EventMonitor:
    """Celery's event stream, consumed in a thread: ``task-sent`` counts by task and queue,
    and every worker node's liveness from its ``worker-online``/``worker-heartbeat``/
    ``worker-offline`` events (Celery sends heartbeats every 2 s unless a worker runs
    ``--without-heartbeat``).

    ``celery_worker_up{hostname, node}`` is 1 while a node's heartbeats arrive, and 0 once it
    said goodbye (``worker-offline``) or stayed silent for ``worker_timeout`` seconds — so
    "worker down" is a series at 0, not a series that vanished with its worker. A node silent
    for ``forget_after`` seconds (0: never) is dropped. Liveness is judged on this process's
    clock (when the event arrived), so the hosts' clocks do not matter; while this process has
    lost the event stream (Redis unreachable) the clock stands still for every node, since
    silence it cannot hear is not a node going down."""

    def __init__(
        self,
        app: Any,
        registry: CollectorRegistry,
        worker_timeout: float = 30.0,
        forget_after: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.worker_timeout = worker_timeout
        self.forget_after = forget_after
        self.clock = clock
        self.sent = Counter(
            "celery_task_sent",
            "Tasks published (from the producers' task-sent events).",
            ("name", "queue_name"),
            registry=registry,
        )
        self.connected = threading.Event()
        self._lock = threading.Lock()
        # node -> (last event's arrival on self.clock, said goodbye)
        self._nodes: dict[str, tuple[float, bool]] = {}
        self._deaf_since: float | None = None  # when the event stream was lost
        registry.register(_WorkerUpCollector(self))

    def on_sent(self, event: dict[str, Any]) -> None:
        """Count one ``task-sent`` event."""
        self.sent.labels(
            str(event.get("name") or "unknown"),
            str(event.get("queue") or event.get("routing_key") or "unknown"),
        ).inc()

    def on_worker(self, event: dict[str, Any]) -> None:
        """Record one worker event (online, heartbeat or offline)."""
        node = event.get("hostname")
        if not node:
            return
        with self._lock:
            self._nodes[str(node)] = (self.clock(), event.get("type") == "worker-offline")

    def lost_stream(self) -> None:
        """The event stream is gone: stop every node's clock until it is back."""
        with self._lock:
            if self._deaf_since is None:
                self._deaf_since = self.clock()

    def regained_stream(self) -> None:
        """The event stream is back: the time without it does not count as silence."""
        with self._lock:
            if self._deaf_since is None:
                return
            deaf = self.clock() - self._deaf_since
            self._nodes = {n: (seen + deaf, gone) for n, (seen, gone) in self._nodes.items()}
            self._deaf_since = None

    def workers(self) -> dict[str, bool]:
        """Every node still remembered, and whether it is up now."""
        alive: dict[str, bool] = {}
        with self._lock:
            now = self.clock() if self._deaf_since is None else self._deaf_since
            for node, (seen, gone) in list(self._nodes.items()):
                silent = now - seen
                if self.forget_after and silent > self.forget_after:
                    del self._nodes[node]
                    continue
                alive[node] = not gone and silent <= self.worker_timeout
        return alive

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        """The event handlers, by event type."""
        return {
            "task-sent": self.on_sent,
            "worker-online": self.on_worker,
            "worker-heartbeat": self.on_worker,
            "worker-offline": self.on_worker,
        }

    def run(self) -> None:
        """Consume events forever, reconnecting with backoff."""
        delay = 1.0
        while True:
            try:
                with self.app.connection_for_read() as conn:
                    receiver = self.app.events.Receiver(conn, handlers=self.handlers())
                    conn.ensure_connection(max_retries=1)
                    self.regained_stream()
                    self.connected.set()
                    delay = 1.0
                    receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception as exc:
                self.connected.clear()
                self.lost_stream()
                logger.warning("event stream lost (%s); reconnecting in %.0fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def start(self) -> threading.Thread:
        """Run in a daemon thread."""
        thread = threading.Thread(target=self.run, name="celery-events", daemon=True)
        thread.start()
        return thread


class _WorkerUpCollector(Collector):
    def __init__(self, monitor: EventMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "celery_worker_up",
            "1 while the worker node sends heartbeats, 0 once it went offline or silent.",
            labels=["hostname", "node"],
        )
        for node, alive in sorted(self.monitor.workers().items()):
            up.add_metric([nodesplit(node)[1], node], 1.0 if alive else 0.0)
        yield up


class ConsumerCounts(Collector):
    """Per queue, the live worker nodes consuming it and their pool processes, from Celery's
    remote control (``active_queues`` and ``stats`` broadcasts), refreshed in a thread every
    ``interval`` seconds so a scrape never waits for the replies. On Redis each node consuming
    a queue is one consumer of it, so the consumer count equals the worker count."""

    def __init__(self, app: Any, queues: Sequence[str], interval: float, timeout: float = 1.0):
        self.app = app
        self.queues = tuple(queues)
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._workers: dict[str, int] = dict.fromkeys(self.queues, 0)
        self._processes: dict[str, int] = dict.fromkeys(self.queues, 0)

    def refresh(self) -> None:
        """Ask the live nodes which queues they consume and how many processes they run."""
        workers: dict[str, int] = dict.fromkeys(self.queues, 0)
        processes: dict[str, int] = dict.fromkeys(self.queues, 0)
        for node in live_nodes(self.app, self.timeout).values():
            for queue in node.queues:
                workers[queue] = workers.get(queue, 0) + 1
                processes[queue] = processes.get(queue, 0) + node.processes
        with self._lock:
            self._workers, self._processes = workers, processes

    def run(self) -> None:
        """Refresh forever."""
        while True:
            try:
                self.refresh()
            except Exception as exc:
                logger.warning("could not ask the workers for their queues: %s", exc)
            time.sleep(self.interval)

    def start(self) -> threading.Thread:
        """Run in a daemon thread."""
        thread = threading.Thread(target=self.run, name="consumer-counts", daemon=True)
        thread.start()
        return thread

    def collect(self) -> Iterator[Any]:
        """The last counts (0 for every watched queue until a node answers)."""
        with self._lock:
            workers, processes = dict(self._workers), dict(self._processes)
        families = (
            ("celery_active_worker_count", "Live worker nodes consuming the queue.", workers),
            ("celery_active_consumer_count", "Consumers of the queue (one per node).", workers),
            ("celery_active_process_count", "Pool processes of those nodes.", processes),
        )
        for name, text, values in families:
            family = GaugeMetricFamily(name, text, labels=["queue_name"])
            for queue in sorted(values):
                family.add_metric([queue], float(values[queue]))
            yield family


@dataclass(frozen=True)
class WorkerWatch:
    """How the exporter follows the worker nodes (``--worker-timeout`` and friends)."""

    events: bool = True
    worker_timeout: float = 30.0
    forget_after: float = 86_400.0
    inspect_interval: float = 30.0


def build_registry(
    app: Any,
    client: redis.Redis,
    layout: QueueLayout,
    dlq: DeadLetterStore,
    unacked_scan_limit: int,
    watch: WorkerWatch,
    catalogue: Catalogue | None = None,
) -> tuple[CollectorRegistry, BrokerCollector]:
    """The exporter's registry (its own, never multiprocess), its threads started."""
    registry = CollectorRegistry()
    collector = BrokerCollector(client, layout, dlq, unacked_scan_limit)
    registry.register(collector)
    registry.register(beat_lock_collector(app, dlq.client))  # the state Redis, as RedBeat's
    if catalogue is not None:
        registry.register(CatalogueCollector(catalogue))
    if watch.events:
        EventMonitor(app, registry, watch.worker_timeout, watch.forget_after).start()
    if watch.inspect_interval:
        counts = ConsumerCounts(app, layout.queues, watch.inspect_interval)
        registry.register(counts)
        counts.start()
    return registry, collector


def queues_with_extra(base: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """The catalogue's queues plus any extra ones, in order, without duplicates."""
    return tuple(dict.fromkeys([*base, *extra]))
