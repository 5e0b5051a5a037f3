"""A Django project adopts the bundle (issue 17): examples/django_project on real parts.

Real PostgreSQL (tests/support/postgres.py), real redis-server, real processes: pool workers
started as hosts start them (``worker-app worker -A proj --pool NAME`` with the project on
PYTHONPATH and ``DJANGO_SETTINGS_MODULE=proj.settings``), Django's ``runserver`` serving the
project's view, ``manage.py`` commands, Celery Beat with django-celery-beat's
``DatabaseScheduler`` and the ``worker-app -A proj dlq`` CLI.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.ports import free_port
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
BIN = Path(sys.executable).parent
WORKER_APP = str(BIN / "worker-app")
CELERY = str(BIN / "celery")
#: Small workers: the machine is shared; the pools' own limits still apply.
WORKER_OPTIONS = (
    "--concurrency", "1",
    "--metrics-port", "0",
    "--no-events",
    "--without-gossip",
    "--without-mingle",
)  # fmt: skip
#: A team's settings module on top of the project's: a setting the bundle must override
#: (CELERY_TASK_ACKS_LATE) and one it leaves alone (CELERY_TASK_DEFAULT_RATE_LIMIT).
ADOPTED_SETTINGS = '''"""The project's settings, with choices made before adopting the bundle."""

from proj.settings import *  # noqa: F403

CELERY_TASK_ACKS_LATE = False
CELERY_TASK_DEFAULT_RATE_LIMIT = "100/s"
'''
ACKS_LATE_OVERRIDE = (
    "worker_app.configure overrides task_acks_late=False -> True "
    "(a message is acknowledged only after its task ran)"
)

Spawn = Callable[..., WorkerProcess]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL 15 on a free 127.0.0.1 port, for the whole session."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def project_env(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of the project's hosts: its own database (migrated), the test Redis,
    the project importable, Django's settings module named."""
    name = f"orders_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    postgres.create_database(name, owner=name, password=password)
    extra = tmp_path_factory.mktemp("settings")
    (extra / "adopted_settings.py").write_text(ADOPTED_SETTINGS)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WORKER_APP_", "CELERY_", "DJANGO_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(PROJECT), str(extra)]),
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="proj.settings",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(32),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_DB_HOST="127.0.0.1",
        DJANGO_DB_PORT=str(postgres.port),
        DJANGO_DB_NAME=name,
        DJANGO_DB_USER=name,
        DJANGO_DB_PASSWORD=password,
        CELERY_BROKER_URL=redis_server.url(0),
        CELERY_RESULT_BACKEND=redis_server.url(1),
        WORKER_APP_LOG_FORMAT="json",
    )
    manage(env, "migrate", "--noinput")
    return env


@pytest.fixture(scope="module")
def db(project_env: dict[str, str]) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """The project's database, as the project's own user sees it."""
    with psycopg.connect(
        host=project_env["DJANGO_DB_HOST"],
        port=int(project_env["DJANGO_DB_PORT"]),
        dbname=project_env["DJANGO_DB_NAME"],
        user=project_env["DJANGO_DB_USER"],
        password=project_env["DJANGO_DB_PASSWORD"],
        autocommit=True,
        row_factory=dict_row,
    ) as conn:
        yield conn


@pytest.fixture(scope="module")
def spawn(project_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawn]:
    """Start a long-running command of the project; every one is stopped after the module."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("processes")

    def start(name: str, command: Sequence[str], ready_text: str, **env: str) -> WorkerProcess:
        log_path = logs / f"{name}-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(command),
                env={**project_env, **env},
                cwd=PROJECT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(running := WorkerProcess(process=process, log_path=log_path))
        running.wait_for_log(ready_text, timeout=90)
        return running

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="module")
def pools(spawn: Spawn) -> dict[str, WorkerProcess]:
    """A worker of the ``critical`` pool and one of ``default``, on the project's app
    (both places ``-A`` is accepted)."""
    return {
        "critical": spawn(
            "critical",
            [WORKER_APP, "-A", "proj", "worker", "--pool", "critical", *WORKER_OPTIONS],
            "ready.",
        ),
        "default": spawn(
            "default",
            [WORKER_APP, "worker", "-A", "proj", "--pool", "default", *WORKER_OPTIONS],
            "ready.",
        ),
    }


@pytest.fixture(scope="module")
def web(spawn: Spawn) -> str:
    """The project served by Django's ``runserver``; its base URL."""
    port = free_port()
    spawn(
        "web",
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        "Quit the server with",
    )
    return f"http://127.0.0.1:{port}"


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py ARGS`` as a deploy step would; its output."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def worker_app_cli(env: dict[str, str], *args: str) -> str:
    """Run ``worker-app ARGS``; its output."""
    done = subprocess.run(
        [WORKER_APP, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"worker-app {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One JSON request to the project; the status and the decoded body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status, json.loads(response.read())


def order(db: psycopg.Connection[dict[str, Any]], order_id: int) -> dict[str, Any]:
    """The order's row."""
    row = db.execute("SELECT * FROM orders_order WHERE id = %s", (order_id,)).fetchone()
    assert row is not None, f"no order {order_id}"
    return row


def insert_order(
    db: psycopg.Connection[dict[str, Any]],
    sku: str,
    address: str = "1 Quay Street, Dublin",
    age: str = "0 seconds",
) -> int:
    """A pending order written straight to the database (an import; nothing published)."""
    row = db.execute(
        "INSERT INTO orders_order (customer, sku, quantity, shipping_address, status,"
        " created_at, fulfilled_by) VALUES ('import', %s, 1, %s, 'pending',"
        " now() - %s::interval, '') RETURNING id",
        (sku, address, age),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def fulfilled(db: psycopg.Connection[dict[str, Any]], order_id: int) -> dict[str, Any] | None:
    """The order's row once it is fulfilled, else None."""
    row = order(db, order_id)
    return row if row["status"] == "fulfilled" else None


def dead_letters(env: dict[str, str], task: str) -> list[dict[str, Any]]:
    """The DLQ entries of ``task``, as ``worker-app -A proj dlq list --json`` prints them."""
    entries: list[dict[str, Any]] = json.loads(
        worker_app_cli(env, "-A", "proj", "dlq", "list", "--json", "--task", task)
    )
    return entries


def test_the_view_publishes_a_task_that_runs_on_the_critical_pool(
    pools: dict[str, WorkerProcess], web: str, db: psycopg.Connection[dict[str, Any]]
) -> None:
    status, placed = http(
        "POST",
        f"{web}/orders/",
        {"customer": "ada", "sku": "kettle", "quantity": 2, "shipping_address": "2 Main St"},
    )
    assert status == 202
    assert placed["status"] == "pending"

    row = wait_until(lambda: fulfilled(db, placed["id"]), timeout=60, what="order fulfilled")

    # CriticalTask routed it to the critical queue: the critical pool's node ran it.
    assert row["fulfilled_by"].startswith("critical@")
    assert row["fulfilled_at"] is not None
    status, shown = http("GET", f"{web}/orders/{placed['id']}/")
    assert (status, shown["status"], shown["fulfilled_by"]) == (
        200,
        "fulfilled",
        row["fulfilled_by"],
    )
    assert f"order {placed['id']} fulfilled" in pools["critical"].log()


def test_a_management_command_publishes_and_the_pool_writes_to_postgresql(
    pools: dict[str, WorkerProcess], project_env: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    ids = [insert_order(db, "bulk-import") for _ in range(3)]
    other = insert_order(db, "not-this-sku")

    output = manage(project_env, "fulfil_pending", "--sku", "bulk-import")

    assert "published 3 fulfilment task(s)" in output
    for order_id in ids:
        row = wait_until(lambda oid=order_id: fulfilled(db, oid), timeout=60, what="fulfilled")
        assert row["fulfilled_by"].startswith("critical@")
    assert order(db, other)["status"] == "pending"


def test_a_failing_task_is_dead_lettered_and_replayed_after_the_data_is_fixed(
    pools: dict[str, WorkerProcess],
    web: str,
    project_env: dict[str, str],
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    _, placed = http("POST", f"{web}/orders/", {"customer": "bob", "sku": "lamp"})
    order_id = placed["id"]

    def entry_for_order() -> dict[str, Any] | None:
        for entry in dead_letters(project_env, "orders.fulfil_order"):
            if entry["args"] == [order_id]:
                return entry
        return None

    entry = wait_until(entry_for_order, timeout=60, what="the order's dead letter")
    assert entry["reason"] == "non_retryable"
    assert entry["queue"] == "critical"
    assert entry["exception_type"].endswith("UnshippableOrderError")
    assert entry["exception_message"] == f"order {order_id} has no shipping address"
    assert entry["retries"] == 0
    assert order(db, order_id)["status"] == "pending"

    # The data is fixed (as support would in the admin), then the dead letter is replayed.
    db.execute(
        "UPDATE orders_order SET shipping_address = %s WHERE id = %s", ("3 Elm Row", order_id)
    )
    output = worker_app_cli(project_env, "-A", "proj", "dlq", "replay", entry["id"])

    assert f"replayed {entry['id']} -> critical (orders.fulfil_order)" in output
    row = wait_until(lambda: fulfilled(db, order_id), timeout=60, what="replayed order fulfilled")
    assert row["fulfilled_by"].startswith("critical@")
    assert entry_for_order() is None


def test_beat_with_the_database_scheduler_runs_a_periodic_task_from_postgresql(
    pools: dict[str, WorkerProcess],
    spawn: Spawn,
    project_env: dict[str, str],
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    stale = insert_order(db, "stale", age="2 days")
    fresh = insert_order(db, "fresh")
    output = manage(project_env, "schedule_expiry", "--every", "1")
    assert "periodic task 'expire stale orders': every 1 s" in output
    schedule = db.execute(
        "SELECT t.task, t.enabled, i.every, i.period FROM django_celery_beat_periodictask t"
        " JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id"
        " WHERE t.name = 'expire stale orders'"
    ).fetchone()
    assert schedule == {
        "task": "orders.expire_stale_orders",
        "enabled": True,
        "every": 1,
        "period": "seconds",
    }

    beat = spawn(
        "beat",
        [
            CELERY, "-A", "proj", "beat",
            "-S", "django_celery_beat.schedulers:DatabaseScheduler",
            "--loglevel", "INFO",
        ],
        "beat: Starting",
    )  # fmt: skip
    try:
        wait_until(
            lambda: order(db, stale)["status"] == "expired", timeout=60, what="stale order expired"
        )
        sent = "Sending due task expire stale orders (orders.expire_stale_orders)"
        wait_until(lambda: beat.log().count(sent) >= 2, timeout=60, what="a second run")
    finally:
        beat.stop()

    assert order(db, fresh)["status"] == "pending"
    # RetryableTask goes to the app's default queue (the catalogue's default): the default
    # pool ran it, the critical pool did not.
    received = "Task orders.expire_stale_orders["
    assert received in pools["default"].log()
    assert received not in pools["critical"].log()


def test_the_projects_celery_settings_apply_and_an_override_is_reported_once(
    pools: dict[str, WorkerProcess], spawn: Spawn, project_env: dict[str, str]
) -> None:
    node = f"default-adopted@{secrets.token_hex(3)}"
    adopted = spawn(
        "adopted",
        [
            WORKER_APP, "-A", "proj", "worker", "--pool", "default", "--hostname", node,
            *WORKER_OPTIONS,
        ],
        "ready.",
        DJANGO_SETTINGS_MODULE="adopted_settings",
    )  # fmt: skip
    try:
        done = subprocess.run(
            [CELERY, "-A", "proj", "inspect", "conf", "true", "--json", "-d", node, "-t", "10"],
            env={**project_env, "DJANGO_SETTINGS_MODULE": "adopted_settings"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        adopted.stop()
    replies = json.loads(done.stdout.strip().splitlines()[-1])
    conf = replies[node] if isinstance(replies, dict) else replies[0][node]

    # The project's own settings stand where the bundle needs nothing else ...
    assert conf["task_default_rate_limit"] == "100/s"
    assert conf["result_expires"] == 6 * 3600
    assert conf["beat_scheduler"] == "django_celery_beat.schedulers:DatabaseScheduler"
    # ... the bundle's guarantees hold where the project chose otherwise, and the worker says
    # so once, with the reason.
    assert conf["task_acks_late"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    log = adopted.log()
    assert log.count(ACKS_LATE_OVERRIDE) == 1, log
    # A record of worker_app's JSON handler (logged once the worker set up its logging).
    (line,) = [line for line in log.splitlines() if ACKS_LATE_OVERRIDE in line]
    record = json.loads(line)
    assert (record["logger"], record["level"]) == ("worker_app.configure", "warning")
    assert "overrides result_expires" not in log
    assert "overrides task_default_rate_limit" not in log
    # The project as shipped (proj.settings) sets nothing the bundle overrides.
    for worker in pools.values():
        assert "worker_app.configure overrides" not in worker.log()
