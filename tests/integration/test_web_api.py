"""The console's JSON API, health check and request metrics (Flask's test client) on a real
Redis with real Celery workers of a two-pool catalogue: ``fast`` runs through the module,
``spare`` only when the health test starts it."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.security import generate_password_hash

from tests.integration.conftest import StartWorker, records
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore
from worker_app.factory import create_app
from worker_app.settings import Settings
from worker_app.web.app import create_console
from worker_app.web.users import User

pytestmark = pytest.mark.integration

PASSWORD = "api-long-password"  # noqa: S105 - test credentials
# A cheap hash: every API request checks the password.
USERS = {
    name: User(name, generate_password_hash(PASSWORD, "pbkdf2:sha256:1000"), role)
    for name, role in (("admin", "admin"), ("viewer", "read-only"))
}
ADMIN, VIEWER = ("admin", PASSWORD), ("viewer", PASSWORD)
POOL = (
    "max_tasks_per_child: 100, max_memory_per_child_kb: 200000, soft_time_limit: 60, "
    "time_limit: 120, concurrency: 1, wait_slo_seconds: 5"
)
CATALOGUE = f"""
pools:
  - {{name: fast, queues: [default, critical, high, low], metrics_port: 19811, {POOL}}}
  - {{name: spare, queues: [web_spare], metrics_port: 19812, {POOL}}}
"""


@pytest.fixture(scope="module")
def worker_env(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The conftest's worker environment with this module's pool catalogue."""
    pools = Path(tmp_path_factory.mktemp("pools")) / "pools.yml"
    pools.write_text(CATALOGUE)
    return {**worker_env, "WORKER_APP_POOLS_FILE": str(pools)}


@pytest.fixture(scope="module")
def fast_worker(start_pool_worker: StartWorker) -> Any:
    return start_pool_worker("fast", node="fast@api-test")


@pytest.fixture(scope="module")
def console(store: DeadLetterStore, client_app: Any, fast_worker: Any) -> Any:
    return create_console(store, USERS, "k" * 40, client_app, control_timeout=1.0)


@pytest.fixture
def api(console: Any) -> Any:
    return console.test_client()


@pytest.fixture
def entries(store: DeadLetterStore) -> Iterator[list[str]]:
    """Ten dead letters of ``examples.record`` on a queue nobody consumes."""
    run = uuid.uuid4().hex[:6]
    now = time.time()
    ids = [f"{run}-{n}" for n in range(10)]
    for n, entry_id in enumerate(ids):  # a minute apart, the newest 460 s ago
        failed_at = now - 1000 + 60 * n
        store.add(DeadLetter(id=entry_id, reason="non_retryable", task_name="examples.record",
                             task_id=entry_id, queue=f"web_parked_{run}", failed_at=failed_at,
                             args=[entry_id], exception_type="app.Boom"))  # fmt: skip
    yield ids
    for entry in store.get_many(ids):
        store.remove(entry.id)


def json_of(response: Any) -> Any:
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    return response.get_json()


# -- authentication ---------------------------------------------------------------------------

GETS = ("/api/dead-letters", "/api/dead-letters/x", "/api/queues", "/api/workers",
        "/api/health", "/api/tasks/x", "/metrics")  # fmt: skip
POSTS = ("/api/dead-letters/x/replay", "/api/dead-letters/x/delete", "/api/dead-letters/bulk",
         "/api/tasks/x/revoke")  # fmt: skip


def test_every_endpoint_needs_basic_credentials_and_never_challenges(api: Any) -> None:
    for path in GETS + POSTS:
        call = api.post if path in POSTS else api.get
        for auth in (None, ("admin", "wrong-password"), ("nobody", PASSWORD)):
            response = call(path, auth=auth)
            assert response.status_code == 401, (path, auth)
            assert "WWW-Authenticate" not in response.headers, path
            assert "credentials" in json_of(response)["message"]


def test_the_session_cookie_is_not_a_credential_for_the_api(api: Any) -> None:
    page = api.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    login = api.post("/login", data={"name": "admin", "password": PASSWORD, "csrf_token": token})
    assert login.status_code == 302 and api.get("/dead-letters").status_code == 200  # logged in
    assert api.get("/api/queues").status_code == 401
    assert api.post("/api/dead-letters/bulk", json={"action": "delete", "dry_run": True},
                    headers={"X-CSRFToken": token}).status_code == 401  # fmt: skip


def test_read_only_users_read_but_change_nothing(
    api: Any, entries: list[str], store: DeadLetterStore
) -> None:
    assert api.get(f"/api/dead-letters/{entries[0]}", auth=VIEWER).status_code == 200
    for path in (f"/api/dead-letters/{entries[0]}/replay", f"/api/dead-letters/{entries[1]}/delete",
                 "/api/tasks/some-task/revoke"):  # fmt: skip
        response = api.post(path, auth=VIEWER)
        assert response.status_code == 403, path
        assert json_of(response)["message"] == "viewer is read-only: only admins change anything"
    bulk = {"action": "delete", "filter": {"task": "examples.record"}, "expected": 10}
    assert api.post("/api/dead-letters/bulk", json=bulk, auth=VIEWER).status_code == 403
    assert [entry.id for entry in store.get_many(entries)] == entries


# -- dead letters -----------------------------------------------------------------------------


def test_the_list_filters_and_pages_like_the_pages(api: Any, entries: list[str]) -> None:
    queue = f"web_parked_{entries[0].split('-')[0]}"
    body = json_of(api.get(f"/api/dead-letters?queue={queue}&per_page=4&page=2", auth=VIEWER))
    assert (body["total"], body["pages"], body["page"], body["per_page"]) == (10, 3, 2, 4)
    assert body["filter"] == {"queue": queue}
    assert [entry["id"] for entry in body["entries"]] == entries[::-1][4:8]  # newest first
    assert body["entries"][0]["args"] == [entries[5]]
    one = json_of(api.get(f"/api/dead-letters/{entries[3]}", auth=VIEWER))
    assert (one["id"], one["queue"], one["exception_type"]) == (entries[3], queue, "app.Boom")


def test_bad_requests_get_a_json_4xx_and_change_nothing(
    api: Any, entries: list[str], store: DeadLetterStore
) -> None:
    for query, status, message in (
        ("reason=boredom", 400, "unknown reason"),
        ("older_than=yesterday", 400, "is not a duration"),
        ("per_page=5000", 400, "per_page must be between 1 and 200"),
        ("page=0", 400, "page must be 1 or more"),
        ("colour=red", 400, "unknown filter"),
    ):
        response = api.get(f"/api/dead-letters?{query}", auth=VIEWER)
        assert response.status_code == status, query
        assert message in json_of(response)["message"], query
    for call, path in ((api.get, "/api/dead-letters/no-such-id"),
                       (api.post, "/api/dead-letters/no-such-id/replay"),
                       (api.post, "/api/dead-letters/no-such-id/delete")):  # fmt: skip
        response = call(path, auth=ADMIN)
        assert response.status_code == 404, path
        assert json_of(response)["message"] == "no dead-letter entry with id 'no-such-id'"
    wrong_method = api.get(f"/api/dead-letters/{entries[0]}/delete", auth=ADMIN)
    assert wrong_method.status_code == 405
    assert set(wrong_method.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert json_of(wrong_method)["error"] == "Method Not Allowed"
    unknown = api.get("/api/no-such-thing", auth=ADMIN)
    assert unknown.status_code == 404 and json_of(unknown)["error"] == "Not Found"
    for body in (
        {"action": "explode"},
        {"action": "delete", "filter": {"colour": "red"}},
        {"action": "delete", "filter": {"task": 3}},
        {"action": "delete"},
        {"action": "delete", "expected": "10"},
        {"action": "delete", "extra": 1},
    ):
        assert api.post("/api/dead-letters/bulk", json=body, auth=ADMIN).status_code == 400, body
    not_json = api.post("/api/dead-letters/bulk", data="action=delete", auth=ADMIN)
    assert json_of(not_json)["message"] == "the body must be a JSON object"
    assert [entry.id for entry in store.get_many(entries)] == entries


def test_replay_and_delete_one(
    api: Any, entries: list[str], store: DeadLetterStore, redis_server: RedisServer, caplog: Any
) -> None:
    queue = f"web_parked_{entries[0].split('-')[0]}"
    broker = redis_server.client(0)
    with caplog.at_level(logging.INFO, logger="worker_app.web.audit"):
        replayed = api.post(f"/api/dead-letters/{entries[0]}/replay", auth=ADMIN)
        deleted = api.post(f"/api/dead-letters/{entries[1]}/delete", auth=ADMIN)
    assert json_of(replayed) == {"id": entries[0], "published": True, "removed": True}
    assert json_of(deleted) == {"id": entries[1], "removed": True}
    assert broker.llen(queue) == 1  # published before the entry was removed
    assert store.get_many(entries[:2]) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"admin replayed dead letter {entries[0]} (examples.record): 1 published, 1 removed",
        f"admin deleted dead letter {entries[1]}: 1 removed",
    ]
    broker.delete(queue)


def test_bulk_dry_run_then_run_with_the_count_409_when_stale(
    api: Any, entries: list[str], store: DeadLetterStore, caplog: Any
) -> None:
    queue = f"web_parked_{entries[0].split('-')[0]}"
    selection = {"action": "delete", "filter": {"queue": queue, "older_than": "750s"}}
    dry = json_of(api.post("/api/dead-letters/bulk", json={**selection, "dry_run": True},
                           auth=ADMIN))  # fmt: skip
    assert dry == {"action": "delete", "filter": {"queue": queue, "older_than": "750s"},
                   "dry_run": True, "count": 5}  # fmt: skip
    assert len(store.get_many(entries)) == 10  # the dry run changed nothing
    stale = api.post("/api/dead-letters/bulk", json={**selection, "expected": 6}, auth=ADMIN)
    assert stale.status_code == 409 and json_of(stale)["count"] == 5
    assert "nothing was changed" in json_of(stale)["message"]
    assert len(store.get_many(entries)) == 10
    with caplog.at_level(logging.INFO, logger="worker_app.web.audit"):
        done = api.post("/api/dead-letters/bulk", json={**selection, "expected": 5}, auth=ADMIN)
    body = json_of(done)
    assert done.status_code == 200
    assert (body["selected"], body["done"], body["kept"], body["skipped"], body["error"]) == (
        5, 5, 0, [], None)  # fmt: skip
    assert [entry.id for entry in store.get_many(entries)] == entries[5:]  # the five newest
    assert [r.getMessage() for r in caplog.records] == [
        f"admin delete {{'queue': '{queue}', 'older_than': '750s'}}: 5 selected, 5 done, 0 kept, "
        "0 skipped"
    ]


# -- queues, workers, tasks -------------------------------------------------------------------


def queue_row(api: Any, name: str) -> dict[str, Any]:
    rows = json_of(api.get("/api/queues", auth=VIEWER))["queues"]
    return next(row for row in rows if row["name"] == name)


def test_queue_figures_equal_what_was_published(
    api: Any, client_app: Any, redis_server: RedisServer, state: redis.Redis
) -> None:
    broker = redis_server.client(0)
    # web_spare has no consumer here: what is published waits.
    plan = {0: 3, 3: 1, 9: 2}
    for priority, count in plan.items():
        for _ in range(count):
            client_app.send_task("examples.record", args=["x"], queue="web_spare",
                                 priority=priority)  # fmt: skip
    time.sleep(0.3)
    spare = queue_row(api, "web_spare")
    assert spare["by_priority"] == {"0": 3, "3": 1, "6": 0, "9": 2}
    assert spare["waiting"] == 6 and spare["pool"] == "spare"
    assert spare["consumers"] == 0 and spare["unacked"] == 0
    assert spare["oldest_wait_seconds"] >= 0.3
    # On default one task runs (unacked) and one waits for its countdown (unacked, scheduled).
    # (The countdown first: a worker takes ETA tasks beyond its prefetch, not while busy.)
    later = client_app.send_task("examples.record", args=["later"], queue="default",
                                 countdown=30)  # fmt: skip
    token = uuid.uuid4().hex[:8]
    running = client_app.send_task("examples.sleepy", args=[token, 60], queue="default")
    wait_until(lambda: records(state, f"pid:{token}"), what="the sleepy task to start")
    wait_until(lambda: broker.hlen("unacked") == 2, what="the worker to hold both")
    fast = queue_row(api, "default")
    assert (fast["waiting"], fast["unacked"], fast["scheduled"], fast["consumers"]) == (0, 2, 1, 1)
    assert fast["oldest_wait_seconds"] is None  # nothing waits
    report = json_of(api.get("/api/queues", auth=VIEWER))
    assert report["unacked_total"] == broker.hlen("unacked") == 2
    client_app.control.revoke([running.id, later.id], terminate=True, signal="SIGTERM")
    for priority in ("", "\x06\x163", "\x06\x169"):
        broker.delete(f"web_spare{priority}")


def test_workers_show_pools_nodes_pool_size_and_active_tasks(
    api: Any, client_app: Any, state: redis.Redis
) -> None:
    token = uuid.uuid4().hex[:8]
    running = client_app.send_task("examples.sleepy", args=[token, 60], queue="default")
    wait_until(lambda: records(state, f"pid:{token}"), what="the sleepy task to start")
    body = json_of(api.get("/api/workers", auth=VIEWER))
    pools = {pool["name"]: pool for pool in body["pools"]}
    assert pools["spare"]["live"] is False and pools["spare"]["nodes"] == []
    (node,) = pools["fast"]["nodes"]
    assert pools["fast"]["live"] is True and pools["fast"]["concurrency"] == 1
    assert (node["name"], node["alive"], node["processes"], node["queues"]) == (
        "fast@api-test", True, 1, ["critical", "default", "high", "low"])  # fmt: skip
    assert [(task["id"], task["name"]) for task in node["active"]] == [
        (running.id, "examples.sleepy")
    ]
    client_app.control.revoke(running.id, terminate=True, signal="SIGTERM")


def test_revoke_with_terminate_ends_a_running_task(
    api: Any, client_app: Any, state: redis.Redis, caplog: Any
) -> None:
    token = uuid.uuid4().hex[:8]
    running = client_app.send_task("examples.sleepy", args=[token, 60], queue="default")
    pid = int(wait_until(lambda: records(state, f"pid:{token}"), what="the task to start")[0])
    with caplog.at_level(logging.INFO, logger="worker_app.web.audit"):
        response = api.post(f"/api/tasks/{running.id}/revoke", json={"terminate": True},
                            auth=ADMIN)  # fmt: skip
    assert json_of(response) == {"id": running.id, "revoked": True, "terminate": True,
                                 "signal": "SIGTERM", "workers_acknowledged": 1}  # fmt: skip
    wait_until(lambda: not _alive(pid), timeout=15, what="the task's process to end")
    status = wait_until(
        lambda: (s := json_of(api.get(f"/api/tasks/{running.id}", auth=VIEWER)))["state"]
        == "REVOKED" and s, what="REVOKED in the result backend",
    )  # fmt: skip
    assert status["result_backend"] is True and status["date_done"]
    assert records(state, f"finished:{token}") == []
    assert [r.getMessage() for r in caplog.records] == [
        f"admin revoked task {running.id} with terminate (SIGTERM): 1 workers acknowledged"
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"  # not a zombie


def test_task_status_from_the_result_backend(
    api: Any, client_app: Any, store: DeadLetterStore, redis_server: RedisServer
) -> None:
    token = uuid.uuid4().hex[:8]
    done = client_app.send_task("examples.slow", args=[token, 0], queue="default")
    done.get(timeout=30)
    body = json_of(api.get(f"/api/tasks/{done.id}", auth=VIEWER))
    assert (body["state"], body["result"], body["exception"]) == ("SUCCESS", token, None)
    assert body["date_done"].startswith(time.strftime("%Y-", time.gmtime()))
    unknown = json_of(api.get("/api/tasks/never-sent", auth=VIEWER))
    assert unknown["state"] == "PENDING" and "no record of this id" in unknown["message"]
    too_long = api.get(f"/api/tasks/{'x' * 201}", auth=VIEWER)
    assert too_long.status_code == 400 and "1-200 printable" in json_of(too_long)["message"]
    # An app without a result backend: the API says so.
    env = {
        "CELERY_BROKER_URL": redis_server.url(0),
        "WORKER_APP_TASK_MODULES": "worker_app.examples",
    }
    plain = create_app(Settings.from_env(env))
    no_backend = create_console(store, USERS, "k" * 40, plain).test_client()
    response = no_backend.get(f"/api/tasks/{done.id}", auth=VIEWER)
    assert response.status_code == 501
    assert json_of(response)["message"] == (
        "this app has no result backend: task status is not recorded"
    )


# -- health and metrics -----------------------------------------------------------------------


def test_health_needs_a_live_node_in_every_pool(
    console: Any, start_pool_worker: StartWorker, store: DeadLetterStore, client_app: Any
) -> None:
    api = console.test_client()
    unhealthy = api.get("/api/health", auth=VIEWER)
    body = json_of(unhealthy)
    assert unhealthy.status_code == 503 and body["failed"] == ["pools"]
    assert body["checks"]["pools"]["message"] == "no live node in pool spare"
    assert body["checks"]["pools"]["nodes"] == {"fast": ["fast@api-test"], "spare": []}
    assert body["checks"]["broker"] == {"ok": True}
    spare = start_pool_worker("spare", node="spare@api-test")
    healthy = wait_until(lambda: (r := api.get("/api/health", auth=VIEWER)).status_code == 200
                         and json_of(r), what="healthy with a spare node")  # fmt: skip
    assert healthy["healthy"] is True and healthy["failed"] == []
    assert healthy["checks"]["pools"]["nodes"]["spare"] == ["spare@api-test"]
    growth = healthy["checks"]["dlq_growth"]
    assert growth["ok"] is True and growth["window_seconds"] == 900 and growth["limit"] is None
    assert growth["entries"] == len(store.ids(failed_after=time.time() - 900))
    spare.stop()
    after = api.get("/api/health", auth=VIEWER)
    assert after.status_code == 503 and json_of(after)["failed"] == ["pools"]


def test_health_fails_when_dead_letters_grow_past_the_limit(
    store: DeadLetterStore, client_app: Any, entries: list[str]
) -> None:
    strict = create_console(store, USERS, "k" * 40, client_app, dlq_growth_window=1200,
                            dlq_growth_limit=3).test_client()  # fmt: skip
    body = json_of(strict.get("/api/health", auth=VIEWER))
    growth = body["checks"]["dlq_growth"]
    assert "dlq_growth" in body["failed"] and growth["ok"] is False
    assert growth["entries"] == len(store.ids(failed_after=time.time() - 1200)) >= 10
    assert growth["message"].endswith("dead letters in the last 1200 s (limit 3)")


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_metrics_count_requests_by_endpoint_per_app(
    store: DeadLetterStore, client_app: Any
) -> None:
    first = create_console(store, USERS, "k" * 40, client_app).test_client()
    second = create_console(store, USERS, "k" * 40, client_app).test_client()
    for _ in range(3):
        first.get("/api/dead-letters?per_page=1", auth=VIEWER)
    first.get("/api/dead-letters?per_page=900", auth=VIEWER)
    first.get("/api/dead-letters/no-such-id", auth=VIEWER)
    first.get("/no/such/path/123")
    assert first.get("/metrics").status_code == 401
    response = first.get("/metrics", auth=VIEWER)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    counts = samples(text, "worker_app_console_requests_total")

    def counted(endpoint: str, status: int) -> float:
        return counts[(("endpoint", endpoint), ("method", "GET"), ("status", str(status)))]

    assert counted("api_dead_letters.index", 200) == 3
    assert counted("api_dead_letters.index", 400) == 1
    assert counted("api_dead_letters.entry", 404) == 1
    assert counted("none", 404) == 1  # the raw path is no label
    assert counted("metrics", 401) == 1
    assert len(counts) == 5
    latency = samples(text, "worker_app_console_request_duration_seconds_count")
    assert latency[(("endpoint", "api_dead_letters.index"), ("method", "GET"))] == 4
    # The other console counted nothing of this.
    other = samples(second.get("/metrics", auth=VIEWER).get_data(as_text=True),
                    "worker_app_console_requests_total")  # fmt: skip
    assert sum(other.values()) == 0


def test_an_unreachable_broker_is_reported_not_hung_on(store: DeadLetterStore) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {"CELERY_BROKER_URL": nobody, "WORKER_APP_TASK_MODULES": "worker_app.examples"}
    app = create_app(Settings.from_env(env))
    api = create_console(store, USERS, "k" * 40, app).test_client()
    health = api.get("/api/health", auth=VIEWER)
    body = json_of(health)
    assert health.status_code == 503 and body["failed"] == ["broker", "pools"]
    assert body["checks"]["broker"]["message"].startswith("the broker's Redis did not answer")
    assert body["checks"]["pools"]["message"] == "not checked: the broker is unreachable"
    assert body["checks"]["dlq_growth"]["ok"] is True  # the DLQ's Redis is another one here
    queues = api.get("/api/queues", auth=VIEWER)
    assert queues.status_code == 503
    assert json_of(queues)["message"].startswith("the broker's Redis did not answer")
