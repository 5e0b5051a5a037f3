"""Worker-side metrics, fed by Celery's and worker_app's signals (``connect()``).

Import only after ``PROMETHEUS_MULTIPROC_DIR`` is set (see ``worker_server``):
every prefork child then writes its own value files and the node's endpoint
sums them. Names and labels follow celery-exporter where the meaning is the same:
``hostname`` is the host part of the node name (``default@web-1`` → ``web-1``; the scrape
target's ``instance`` and ``pool`` labels tell two nodes of one host apart), and the first
message of a task name and queue creates its outcome counters at 0, so "none yet" reads 0.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from celery import signals
from celery.utils.nodenames import nodesplit
from prometheus_client import Counter, Gauge, Histogram

from worker_app import events
from worker_app.headers import PUBLISHED_AT

TASK_LABELS = ("name", "hostname", "queue_name")

RUNTIME_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    900,
    1800,
)
WAIT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    900,
    3600,
)
MEMORY_BUCKETS = tuple(float(2**n * 1024 * 1024) for n in range(4, 14))  # 16 MiB .. 8 GiB

received = Counter("celery_task_received", "Tasks received by the worker.", TASK_LABELS)
started = Counter("celery_task_started", "Tasks started (each run, retries included).", TASK_LABELS)
succeeded = Counter("celery_task_succeeded", "Tasks that succeeded.", TASK_LABELS)
failed = Counter(
    "celery_task_failed", "Task runs that failed for good.", (*TASK_LABELS, "exception")
)
retried = Counter("celery_task_retried", "Task runs that asked for a retry.", TASK_LABELS)
rejected = Counter("celery_task_rejected", "Messages rejected by the worker.", TASK_LABELS)
revoked = Counter("celery_task_revoked", "Tasks revoked before or while running.", TASK_LABELS)
runtime = Histogram(
    "celery_task_runtime", "Task run time in seconds.", TASK_LABELS, buckets=RUNTIME_BUCKETS
)
queue_wait = Histogram(
    "celery_task_queue_wait_seconds",
    "Seconds from publish (or from the ETA, if later) to start.",
    ("name", "queue_name"),
    buckets=WAIT_BUCKETS,
)
queue_wait_unknown = Counter(
    "worker_app_task_queue_wait_unknown",
    "Task starts whose message carried no publish timestamp (not published through worker_app).",
    ("name", "queue_name"),
)
time_limit_hits = Counter(
    "worker_app_task_time_limit_hits",
    "Time limits hit, by kind (soft or hard).",
    ("name", "hostname", "kind"),
)
peak_rss = Histogram(
    "worker_app_task_peak_rss_bytes",
    "Peak resident memory of the pool process after the task (ru_maxrss).",
    ("name",),
    buckets=MEMORY_BUCKETS,
)
breaker_state = Gauge(
    "worker_app_circuit_breaker_state",
    "Circuit breaker state last seen by this node: 0 closed, 1 half-open, 2 open.",
    ("breaker",),
    multiprocess_mode="mostrecent",
)
idempotent_skips = Counter(
    "worker_app_idempotent_skips", "Task runs skipped because their key completed.", ("name",)
)
dlq_written = Counter(
    "worker_app_dlq_entries_written",
    "Dead-letter entries written, by reason.",
    ("name", "queue_name", "reason"),
)

consumer_cut_off = Counter(
    "worker_app_consumer_cut_off",
    "Times this node's consumer found it had been silent past the grace period (cut off from "
    "Redis): the messages it held went back to their queues and may run twice.",
)

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

# Start times of the runs in this process, by task id.
_started_at: dict[str, float] = {}


def _queue(request: Any) -> str:
    delivery = getattr(request, "delivery_info", None) or {}
    return str(delivery.get("routing_key") or "unknown")


def host_of(node: str | None) -> str:
    """The host part of a Celery node name, as celery-exporter labels it."""
    return nodesplit(node)[1] if node else "unknown"


def _hostname(request: Any) -> str:
    return host_of(getattr(request, "hostname", None))


def _labels(task: Any) -> tuple[str, str, str]:
    request = task.request
    return str(task.name), _hostname(request), _queue(request)


def _eta_timestamp(request: Any) -> float | None:
    eta = getattr(request, "eta", None)
    if not eta:
        return None
    try:
        from datetime import datetime  # noqa: PLC0415

        return datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


#: Label children by (metric, label values), resolved once per process: ``labels()`` validates
#: and looks its labels up on every call (~4 µs each, about eight per task).
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}
#: (name, hostname, queue) whose outcome counters this process created at 0.
_announced: set[tuple[str, str, str]] = set()


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def _on_received(request: Any = None, **_: Any) -> None:
    if request is None:
        return
    labels = (str(request.name), _hostname(request), _queue(request))
    _child(received, *labels).inc()
    if labels not in _announced:
        # Outcomes that have not happened yet read 0, not "no data" (as celery-exporter's do).
        _announced.add(labels)
        for counter in (started, succeeded, retried, rejected, revoked):
            counter.labels(*labels)
        failed.labels(*labels, "")


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or task_id is None:
        return
    now = time.time()
    _started_at[task_id] = time.monotonic()
    name, host, queue = _labels(task)
    _child(started, name, host, queue).inc()
    published = getattr(task.request, PUBLISHED_AT, None)
    if published is None:
        _child(queue_wait_unknown, name, queue).inc()
        return
    due = max(float(published), _eta_timestamp(task.request) or 0.0)
    _child(queue_wait, name, queue).observe(max(0.0, now - due))


def _on_postrun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or task_id is None:
        return
    began = _started_at.pop(task_id, None)
    if began is not None:
        _child(runtime, *_labels(task)).observe(time.monotonic() - began)
    _child(peak_rss, str(task.name)).observe(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )


def _on_success(sender: Any = None, **_: Any) -> None:
    if sender is not None:
        _child(succeeded, *_labels(sender)).inc()


def _on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if sender is None:
        return
    kind = type(exception).__name__ if exception is not None else "unknown"
    request = sender.request
    if getattr(request, "id", None) is None:
        # Sent by the parent for a hard time limit: no request context here.
        failed.labels(sender.name, "unknown", "unknown", kind).inc()
        return
    failed.labels(*_labels(sender), kind).inc()


def _on_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    if sender is not None:
        retried.labels(sender.name, _hostname(request), _queue(request)).inc()


def _on_rejected(
    sender: Any = None, message: Any = None, name: str | None = None, **_: Any
) -> None:
    """A message the worker refused: not a task, undecodable, or (``task_unknown``, which
    passes ``name``) a task of no known name."""
    headers = getattr(message, "headers", None) or {}
    delivery = getattr(message, "delivery_info", None) or {}
    rejected.labels(
        str(name or headers.get("task") or "unknown"),
        host_of(getattr(sender, "hostname", None)),  # the worker's consumer sends it
        str(delivery.get("routing_key") or "unknown"),
    ).inc()


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Celery sends the task as ``sender`` and the request's context (no ``name``)."""
    if request is None:
        return
    name = getattr(sender, "name", None) or getattr(request, "task", None) or "unknown"
    revoked.labels(str(name), _hostname(request), _queue(request)).inc()


def _on_time_limit(
    sender: Any = None, hard: bool = False, hostname: str | None = None, **_: Any
) -> None:
    time_limit_hits.labels(str(sender), host_of(hostname), "hard" if hard else "soft").inc()


def _on_breaker(breaker: str = "", state: str = "closed", **_: Any) -> None:
    breaker_state.labels(breaker).set(BREAKER_VALUES.get(state, 0))


def _on_idempotent_skip(sender: Any = None, **_: Any) -> None:
    idempotent_skips.labels(str(sender)).inc()


def _on_dead_lettered(entry: Any = None, **_: Any) -> None:
    if entry is not None:
        dlq_written.labels(
            str(entry.task_name or "unknown"), str(entry.queue or "unknown"), entry.reason
        ).inc()


def _on_consumer_cut_off(**_: Any) -> None:
    consumer_cut_off.inc()


_HANDLERS = (
    (signals.task_received, _on_received),
    (signals.task_prerun, _on_prerun),
    (signals.task_postrun, _on_postrun),
    (signals.task_success, _on_success),
    (signals.task_failure, _on_failure),
    (signals.task_retry, _on_retry),
    (signals.task_rejected, _on_rejected),
    (signals.task_unknown, _on_rejected),
    (signals.task_revoked, _on_revoked),
    (events.time_limit_hit, _on_time_limit),
    (events.breaker_state_changed, _on_breaker),
    (events.idempotent_skipped, _on_idempotent_skip),
    (events.task_dead_lettered, _on_dead_lettered),
    (events.consumer_cut_off, _on_consumer_cut_off),
)


def connect() -> None:
    """Connect every handler (once; strong references, so they stay connected)."""
    for signal, handler in _HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"worker_app.metrics.{handler.__name__}")
