"""Pools consume only their queues; a circuit breaker is shared across workers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import redis

from tests.integration.conftest import StartWorker, records
from tests.support.waiting import wait_until
from worker_app.breaker import BreakerState, CircuitBreaker
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError
from worker_app.pools import load_catalogue

# The queues of the default pool catalogue (worker_app/pools.yml).
QUEUE_NAMES = load_catalogue().queue_names

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def all_pools(start_pool_worker: StartWorker) -> dict[str, Any]:
    """One worker per pool, one process each."""
    return {pool: start_pool_worker(pool, "--concurrency", "1") for pool in QUEUE_NAMES}


def test_each_pool_consumes_only_its_own_queue(
    all_pools: dict[str, Any], client_app: Any, state: redis.Redis
) -> None:
    tokens = {queue: uuid.uuid4().hex[:8] for queue in QUEUE_NAMES}
    for queue, token in tokens.items():
        client_app.send_task("examples.record", args=[token], queue=queue)
    for queue, token in tokens.items():
        ran = wait_until(lambda t=token: records(state, f"ran:{t}"), what=f"the {queue} task")
        pool, node = ran[0].split()
        assert pool == queue
        assert node.startswith(f"{queue}@")


def test_task_class_queue_routes_without_naming_a_queue(
    all_pools: dict[str, Any], client_app: Any, state: redis.Redis
) -> None:
    import worker_app.examples  # noqa: F401, PLC0415 - defines the example tasks

    user = int(time.time() * 1000) % 1_000_000
    notify_user = client_app.tasks["examples.notify_user"]
    notify_user.delay(user)  # no queue named: the CriticalTask class picks `critical`
    ran = wait_until(
        lambda: [v for v in records(state, "notified") if v.startswith(f"{user} ")],
        what="the critical task",
    )
    assert ran == [f"{user} critical"]


def test_breaker_opens_across_two_workers_and_half_opens_after_timeout(
    all_pools: dict[str, Any], client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    breaker = CircuitBreaker(state, "examples-payments", fail_max=3, reset_timeout=3.0)
    breaker.reset()
    token = uuid.uuid4().hex[:8]

    def call(queue: str, succeed: bool) -> Any:
        result = client_app.send_task("examples.guarded_call", args=[token, succeed], queue=queue)
        wait_until(lambda: _in_dlq(store, result.id) or _succeeded(result), what="the call")
        return result

    # Three failures, alternating between the `high` and the `default` worker.
    for queue in ("high", "default", "high"):
        call(queue, succeed=False)
    nodes = {value.split()[1].split("@")[0] for value in records(state, f"calls:{token}")}
    assert nodes == {"high", "default"}
    assert breaker.state() is BreakerState.OPEN

    # While open, the call does not reach the service: it fails fast into the DLQ.
    blocked = call("default", succeed=True)
    assert len(records(state, f"calls:{token}")) == 3
    entry = store.get(blocked.id)
    assert entry.exception_type == "worker_app.task_classes.CircuitOpenError"

    # After reset_timeout one trial goes through (half-open); it fails: open again.
    time.sleep(3.2)
    call("high", succeed=False)
    assert len(records(state, f"calls:{token}")) == 4
    assert breaker.state() is BreakerState.OPEN

    # Next trial succeeds: closed, calls flow again.
    time.sleep(3.2)
    call("default", succeed=True)
    assert breaker.state() is BreakerState.CLOSED
    call("high", succeed=True)
    assert len(records(state, f"calls:{token}")) == 6


def test_unknown_pool_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker_app.cli", "worker", "--pool", "urgent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown pool 'urgent'" in proc.stderr
    assert "critical, high, default, low" in proc.stderr


def _in_dlq(store: DeadLetterStore, task_id: str) -> bool:
    try:
        store.get(task_id)
    except UnknownEntryError:
        return False
    return True


def _succeeded(result: Any) -> bool:
    return bool(result.ready() and result.successful())
