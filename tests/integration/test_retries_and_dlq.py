"""Retries with backoff, dead-lettering and replay, with real workers and Redis."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from tests.integration.conftest import StartWorker, record_times, records
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess
from worker_app.backoff import backoff_ceiling
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError
from worker_app.examples import fix_upstream
from worker_app.policies import MIN_RETRY_DELAY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_worker(start_pool_worker: StartWorker) -> WorkerProcess:
    """One `default` pool worker with two processes and a death handler."""
    return start_pool_worker(
        "default",
        "--concurrency",
        "2",
        WORKER_APP_DEATH_HANDLERS="tests.support.death_handler:record_death",
    )


def _token() -> str:
    return uuid.uuid4().hex[:12]


def _log_lines(worker: WorkerProcess, task_id: str) -> list[dict[str, Any]]:
    lines = []
    for line in worker.log().splitlines():
        if line.startswith("{") and task_id in line:
            lines.append(json.loads(line))
    return lines


def test_transient_failure_then_success_with_backoff(
    default_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    token = _token()
    result = client_app.send_task("examples.flaky", args=[token, 3], queue="default")
    assert result.get(timeout=60) == "ok after 3 retries"
    assert records(state, f"attempts:{token}") == ["0", "1", "2", "3"]
    # Each retry announced a countdown within the backoff ceiling (base 0.2 s,
    # doubling) and not below the floor, and the next attempt did not start before it was due.
    retries = [line for line in _log_lines(default_worker, result.id) if "retry_countdown" in line]
    assert [line["retry_number"] for line in retries] == [1, 2, 3]
    times = record_times(state, f"attempts:{token}")
    for n, line in enumerate(retries):
        ceiling = max(MIN_RETRY_DELAY, backoff_ceiling(n, 0.2, 600))
        assert MIN_RETRY_DELAY <= line["retry_countdown"] <= ceiling
        assert times[n + 1] - times[n] >= line["retry_countdown"] - 0.05
        assert line["task_id"] == result.id
        assert line["task_name"] == "examples.flaky"
        assert line["queue"] == "default"
        assert line["pool"] == "default"
    with pytest.raises(UnknownEntryError):
        store.get(result.id)


def test_exhaustion_writes_one_entry_then_replay_runs_it_again(
    default_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    token = _token()
    result = client_app.send_task("examples.always_fails", args=[token], queue="default")
    entry = wait_until(lambda: _maybe_get(store, result.id), what="the DLQ entry")
    assert records(state, f"attempts:{token}") == ["0", "1", "2"]
    assert [
        e.id for e in store.iter_entries(task="examples.always_fails") if e.id == result.id
    ] == [result.id]
    assert entry.reason == "retries_exhausted"
    assert entry.task_name == "examples.always_fails"
    assert entry.task_id == result.id
    assert entry.args == [token]
    assert entry.kwargs == {}
    assert entry.queue == "default"
    assert entry.exception_type == "TimeoutError"
    assert entry.exception_message == f"upstream timed out for {token}"
    assert "TimeoutError" in (entry.traceback or "")
    assert entry.retries == 2
    assert entry.first_published_at is not None
    assert entry.first_published_at <= entry.failed_at
    assert entry.hostname and "default" in entry.hostname
    assert entry.replay_count == 0
    # The message's headers as the worker had them: Celery's and worker_app's, not the
    # request's own state.
    assert entry.headers["task"] == "examples.always_fails"
    assert entry.headers["id"] == result.id
    assert entry.headers["worker_app_queue"] == "default"
    assert entry.headers["worker_app_first_published_at"] == entry.first_published_at
    assert entry.headers["argsrepr"] == repr((token,))  # Celery's repr of the args tuple
    assert not {"args", "kwargs", "delivery_info", "hostname"} & set(entry.headers)

    # The operator fixes the upstream and replays: the task runs again with a
    # fresh retry budget, succeeds, and the entry is gone.
    fix_upstream(state, token)
    _run_cli(client_app, ["dlq", "replay", entry.id])
    wait_until(lambda: records(state, f"succeeded:{token}"), what="the replayed run")
    assert records(state, f"attempts:{token}") == ["0", "1", "2", "0"]
    with pytest.raises(UnknownEntryError):
        store.get(entry.id)


def test_non_retryable_error_goes_to_dlq_without_retries(
    default_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    token = _token()
    result = client_app.send_task("examples.invalid_input", args=[token], queue="default")
    entry = wait_until(lambda: _maybe_get(store, result.id), what="the DLQ entry")
    assert entry.reason == "non_retryable"
    assert entry.retries == 0
    # The configured death handler (an alerting hook) was told.
    wait_until(
        lambda: f"{result.id} non_retryable".encode() in state.lrange("test:deaths", 0, -1),
        what="the death handler",
    )
    assert entry.exception_type == "worker_app.task_classes.NonRetryableError"
    assert records(state, f"attempts:{token}") == ["0"]


def test_soft_time_limit_cleans_up_then_dead_letters(
    default_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    token = _token()
    result = client_app.send_task("examples.slow", args=[token, 6], queue="default")
    entry = wait_until(lambda: _maybe_get(store, result.id), timeout=20, what="the DLQ entry")
    assert entry.reason == "time_limit"
    assert entry.exception_type == "billiard.exceptions.SoftTimeLimitExceeded"
    assert records(state, f"cleanup:{token}") == ["soft time limit"]
    assert records(state, f"finished:{token}") == []


def test_hard_time_limit_is_dead_lettered_by_the_parent(
    default_worker: WorkerProcess, client_app: Any, state: redis.Redis, store: DeadLetterStore
) -> None:
    token = _token()
    result = client_app.send_task(
        "examples.stubborn", args=[token, 30], queue="default", soft_time_limit=1, time_limit=2
    )
    entry = wait_until(lambda: _maybe_get(store, result.id), timeout=20, what="the DLQ entry")
    assert entry.reason == "time_limit"
    assert entry.exception_type == "billiard.exceptions.TimeLimitExceeded"
    assert entry.headers["timelimit"] == [2, 1]  # written by the parent, from its request
    assert entry.args == [token, 30]
    assert entry.queue == "default"
    assert records(state, f"ignored_soft_limit:{token}") == ["1"]
    assert records(state, f"finished:{token}") == []


def test_idempotent_task_published_twice_runs_once(
    default_worker: WorkerProcess, client_app: Any, state: redis.Redis
) -> None:
    order = f"order-{_token()}"
    first = client_app.send_task("examples.idempotent_charge", args=[order, 1999], queue="default")
    second = client_app.send_task("examples.idempotent_charge", args=[order, 1999], queue="default")
    assert first.id != second.id
    first.get(timeout=30)
    # The duplicate is skipped (maybe after waiting for the first run's claim).
    wait_until(
        lambda: any(
            "idempotency key already completed" in line.get("message", "")
            for line in _log_lines(default_worker, second.id)
        ),
        timeout=30,
        what="the duplicate to be skipped",
    )
    assert records(state, f"charged:{order}") == ["1999"]


@pytest.mark.bad_input
def test_dlq_cli_refuses_unknown_ids_and_changes_nothing(
    default_worker: WorkerProcess, client_app: Any, store: DeadLetterStore
) -> None:
    before = len(store)
    for command in (["dlq", "show", "no-such-id"], ["dlq", "replay", "no-such-id"],
                    ["dlq", "delete", "no-such-id"]):  # fmt: skip
        result = _run_cli(client_app, command, expect_ok=False)
        assert result.exit_code != 0
        assert "no-such-id" in result.output
    assert len(store) == before


def _maybe_get(store: DeadLetterStore, entry_id: str) -> Any:
    try:
        return store.get(entry_id)
    except UnknownEntryError:
        return None


def _run_cli(client_app: Any, args: list[str], expect_ok: bool = True) -> Any:
    from click.testing import CliRunner  # noqa: PLC0415

    from worker_app.cli import main  # noqa: PLC0415

    env = {"CELERY_BROKER_URL": client_app.conf.broker_url}
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    if expect_ok:
        assert result.exit_code == 0, result.output
    return result


def test_dlq_cli_stats_delete_and_purge(client_app: Any, store: DeadLetterStore) -> None:
    import time  # noqa: PLC0415

    from worker_app.dlq.entry import DeadLetter  # noqa: PLC0415

    now = time.time()
    ids = [f"cli-{_token()}" for _ in range(3)]
    for n, entry_id in enumerate(ids):
        entry = DeadLetter(id=entry_id, reason="non_retryable", task_name="cli.task",
                           task_id=entry_id, queue="low", failed_at=now - 432000 * n)  # fmt: skip
        store.add(entry)
    stats = json.loads(_run_cli(client_app, ["dlq", "stats", "--json"]).output)
    assert {"queue": "low", "task": "cli.task", "count": 3} in stats["by_queue_and_task"]
    listed = json.loads(
        _run_cli(client_app, ["dlq", "list", "--task", "cli.task", "--json"]).output
    )
    assert [e["id"] for e in listed] == ids  # newest first
    shown = json.loads(_run_cli(client_app, ["dlq", "show", ids[0], "--json"]).output)
    assert shown["task_name"] == "cli.task"
    # Purge refuses to run unattended without --yes, and changes nothing then.
    refused = _run_cli(client_app, ["dlq", "purge", "--older-than", "7d"], expect_ok=False)
    assert refused.exit_code != 0 and "--yes" in refused.output
    assert len(list(store.iter_entries(task="cli.task"))) == 3
    out = _run_cli(client_app, ["dlq", "purge", "--older-than", "7d", "--yes"]).output
    assert "purged 1 entries" in out  # only the 10-day-old one
    _run_cli(client_app, ["dlq", "delete", ids[0], ids[1]])
    assert list(store.iter_entries(task="cli.task")) == []
