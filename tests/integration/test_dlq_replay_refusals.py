"""`worker-app dlq replay` (the real console script) with ids it must refuse: an unknown id,
known and unknown ids mixed, an entry with no task in it, an entry too large to publish.

Each refusal exits non-zero with one clear line and leaves Redis byte-for-byte as it was: every
DLQ entry, count and index, and every queued message (compared with DUMP of every key).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.broker import queued, queued_bodies, snapshot
from tests.support.redis_server import RedisServer
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError
from worker_app.dlq.writer import store_for
from worker_app.factory import create_app
from worker_app.message_size import SETTING, body_size, task_body
from worker_app.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.bad_input]

WORKER_APP = Path(sys.executable).parent / "worker-app"


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> dict[str, str]:
    """An operator's shell on a worker host (no worker runs in this module)."""
    return {"CELERY_BROKER_URL": redis_server.url(0), "WORKER_APP_LOG_FORMAT": "text"}


@pytest.fixture(scope="module")
def store(env: dict[str, str]) -> DeadLetterStore:
    """The DLQ the CLI reads."""
    return store_for(Settings.from_env(env))


@pytest.fixture(scope="module")
def broker(redis_server: RedisServer) -> redis.Redis:
    """The broker's database (queues and the DLQ)."""
    return redis_server.client(0)


@pytest.fixture(scope="module", autouse=True)
def other_work(env: dict[str, str], store: DeadLetterStore) -> None:
    """Entries and queued messages that no refused command may touch."""
    for n, queue in enumerate(("default", "low", "critical")):
        entry_id = f"bystander-{n}"
        store.add(DeadLetter(id=entry_id, reason="retries_exhausted", task_name="billing.charge",
                             task_id=entry_id, queue=queue, args=[f"order-{n}", 100 * n],
                             failed_at=time.time()))  # fmt: skip
    app = create_app(Settings.from_env(env))
    app.send_task("billing.charge", args=["queued-order", 1], queue="high")
    app.send_task("billing.refund", args=["queued-order"], queue="low", priority=6)


def worker_app(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as an operator would."""
    return subprocess.run(
        [str(WORKER_APP), *args], env={**os.environ, **env, **extra},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _new(store: DeadLetterStore, **fields: Any) -> DeadLetter:
    entry_id = str(uuid.uuid4())
    values: dict[str, Any] = {"reason": "non_retryable", "task_name": "reports.build",
                              "queue": "default", "args": [entry_id],
                              "failed_at": time.time()}  # fmt: skip
    entry = DeadLetter(id=entry_id, task_id=entry_id, **{**values, **fields})
    store.add(entry)
    return entry


def _refused(env: dict[str, str], broker: redis.Redis, *args: str, **extra: str) -> str:
    """Run a command that must be refused; return its error line. Nothing may change."""
    before = snapshot(broker)
    assert before, "the database holds entries and messages"
    proc = worker_app(env, *args, **extra)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "", "nothing was replayed"
    assert snapshot(broker) == before
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # one clear line, no traceback
    return lines[0]


def test_replay_of_an_unknown_id(env: dict[str, str], broker: redis.Redis) -> None:
    assert _refused(env, broker, "dlq", "replay", "no-such-id") == (
        "Error: no dead-letter entry with id: no-such-id (nothing changed)"
    )


def test_replay_of_known_and_unknown_ids_replays_none(
    env: dict[str, str], broker: redis.Redis, store: DeadLetterStore
) -> None:
    known = _new(store)
    line = _refused(env, broker, "dlq", "replay", known.id, "no-such-id", "bystander-0", "nope-2")
    assert line == "Error: no dead-letter entry with id: no-such-id, nope-2 (nothing changed)"
    assert store.get(known.id) == known


def test_show_and_delete_refuse_unknown_ids_too(
    env: dict[str, str], broker: redis.Redis, store: DeadLetterStore
) -> None:
    known = _new(store)
    assert _refused(env, broker, "dlq", "show", "no-such-id") == (
        "Error: no dead-letter entry with id: no-such-id (nothing changed)"
    )
    assert _refused(env, broker, "dlq", "delete", known.id, "no-such-id") == (
        "Error: no dead-letter entry with id: no-such-id (nothing changed)"
    )
    assert store.get(known.id) == known


def test_replay_with_an_entry_that_holds_no_task_replays_none(
    env: dict[str, str], broker: redis.Redis, store: DeadLetterStore
) -> None:
    good = _new(store)
    body = _new(store, reason="undecodable", raw_body='{"not json', args=[])
    line = _refused(env, broker, "dlq", "replay", good.id, body.id)
    assert line == f"Error: not replayable (no task to publish): {body.id} (nothing changed)"
    assert store.get(good.id) == good


def test_replay_of_an_entry_too_large_to_publish(
    env: dict[str, str], broker: redis.Redis, store: DeadLetterStore
) -> None:
    small = _new(store, queue="low")
    big = _new(store, queue="low", args=["x" * 5000])
    size = body_size(task_body(big.args, {}), "json")
    line = _refused(env, broker, "dlq", "replay", small.id, big.id, **{SETTING: "4096"})
    assert line == (
        f"Error: too large to publish under {SETTING}=4096: {big.id} ({size} bytes) (nothing "
        f"changed); to replay them, run this command with {SETTING} set above their size"
    )
    # --all refuses the same way (the bystanders are replayable, and stay).
    assert _refused(env, broker, "dlq", "replay", "--all", **{SETTING: "4096"}).startswith(
        f"Error: too large to publish under {SETTING}=4096: {big.id} ("
    )

    # The control: with the limit raised for this one command, both are published with their
    # arguments and only then removed from the DLQ.
    low_before = queued(broker).get("low", 0)
    before = snapshot(broker)
    proc = worker_app(env, "dlq", "replay", small.id, big.id, **{SETTING: "8192"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert snapshot(broker) != before
    assert f"replayed {big.id} -> low (reports.build)" in proc.stdout
    for entry in (small, big):
        with pytest.raises(UnknownEntryError):
            store.get(entry.id)
    assert queued(broker)["low"] == low_before + 2
    published = {headers["id"]: body[0] for headers, body in queued_bodies(broker, "low")}
    assert published[small.id] == small.args
    assert published[big.id] == big.args
