"""The worker's signal handlers (worker_app.metrics.worker_metrics) with their label children
resolved once per process: the same series and values as with ``labels()`` on every call."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from worker_app.headers import PUBLISHED_AT
from worker_app.metrics import worker_metrics as wm

NAME = "unit.cached_series"
LABELS = {"name": NAME, "hostname": "web-1", "queue_name": "default"}


def _value(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def _request(task_id: str) -> Any:
    return SimpleNamespace(
        id=task_id, name=NAME, hostname="default@web-1",
        delivery_info={"routing_key": "default"}, eta=None,
        **{PUBLISHED_AT: time.time() - 0.2},
    )  # fmt: skip


def test_received_creates_the_outcome_counters_at_zero_once_and_counts_every_message() -> None:
    for _ in range(3):
        wm._on_received(request=_request("r"))
    assert _value("celery_task_received_total", **LABELS) == 3
    for metric in ("started", "succeeded", "retried", "rejected", "revoked"):
        assert _value(f"celery_task_{metric}_total", **LABELS) == 0
    assert _value("celery_task_failed_total", **LABELS, exception="") == 0


def test_each_run_counts_its_start_success_wait_runtime_and_memory() -> None:
    for n in range(2):
        task = SimpleNamespace(name=NAME, request=_request(f"t{n}"))
        wm._on_prerun(task_id=f"t{n}", task=task)
        wm._on_success(sender=task)
        wm._on_postrun(task_id=f"t{n}", task=task)
    assert _value("celery_task_started_total", **LABELS) == 2
    assert _value("celery_task_succeeded_total", **LABELS) == 2
    assert _value("celery_task_runtime_count", **LABELS) == 2
    wait = {"name": NAME, "queue_name": "default"}
    assert _value("celery_task_queue_wait_seconds_count", **wait) == 2
    assert (_value("celery_task_queue_wait_seconds_sum", **wait) or 0) >= 0.4
    assert _value("worker_app_task_queue_wait_unknown_total", **wait) is None  # never made
    assert _value("worker_app_task_peak_rss_bytes_count", name=NAME) == 2
