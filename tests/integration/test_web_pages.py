"""The console's queues, workers and tasks pages (Flask's test client, session login) on a real
Redis with one real worker of the default catalogue's ``default`` pool."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import pytest
import redis

from tests.integration.conftest import StartWorker, records
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from worker_app.dlq.store import DeadLetterStore
from worker_app.factory import create_app
from worker_app.settings import Settings
from worker_app.web.app import create_console
from worker_app.web.users import User, hash_password

pytestmark = pytest.mark.integration

PASSWORD = "pages-long-password"  # noqa: S105 - test credentials
USERS = {
    "admin": User("admin", hash_password(PASSWORD), "admin"),
    "viewer": User("viewer", hash_password(PASSWORD), "read-only"),
}


@pytest.fixture(scope="module")
def console(store: DeadLetterStore, client_app: Any, start_pool_worker: StartWorker) -> Any:
    start_pool_worker("default", "--concurrency", "1", node="default@pages-test")
    return create_console(store, USERS, "k" * 40, client_app, flower_url="http://flower.test/")


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def logged_in(console: Any, name: str) -> tuple[Any, str]:
    """A client logged in as ``name`` and its session's CSRF token."""
    client = console.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    form = {"name": name, "password": PASSWORD, "csrf_token": token}
    assert client.post("/login", data=form).status_code == 302
    return client, csrf_of(client.get("/tasks").get_data(as_text=True))


def test_every_page_needs_a_login_and_links_the_others(console: Any) -> None:
    client = console.test_client()
    for path in ("/queues", "/workers", "/tasks", "/tasks?id=x", "/tasks/x/revoke"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    admin, _token = logged_in(console, "admin")
    html = admin.get("/tasks").get_data(as_text=True)
    for link in ("/dead-letters", "/queues", "/workers", "/tasks", "http://flower.test/"):
        assert f'href="{link}"' in html, link


def test_the_queues_page_shows_what_waits(
    console: Any, client_app: Any, redis_server: RedisServer
) -> None:
    for _ in range(2):
        client_app.send_task("examples.record", args=["x"], queue="high", priority=3)
    client, _token = logged_in(console, "viewer")
    html = client.get("/queues").get_data(as_text=True)
    row = html.split('<tr id="queue-high">')[1].split("</tr>")[0]
    assert '<td class="waiting">2</td>' in row and '<td class="priority-3">2</td>' in row
    assert '<td class="consumers">0</td>' in row
    default = html.split('<tr id="queue-default">')[1].split("</tr>")[0]
    assert '<td class="consumers">1</td>' in default
    redis_server.client(0).delete("high\x06\x163")


def test_the_workers_page_shows_pools_with_and_without_nodes(console: Any) -> None:
    client, _token = logged_in(console, "viewer")
    html = client.get("/workers").get_data(as_text=True)
    default = html.split('<section id="pool-default">')[1].split("</section>")[0]
    assert "default@pages-test" in default and "pool size 1" in default
    assert "No live node" not in default
    low = html.split('<section id="pool-low">')[1].split("</section>")[0]
    assert "No live node in this pool." in low


def test_a_task_page_shows_the_result_escaped_and_revoke_only_for_admins(
    console: Any, client_app: Any
) -> None:
    done = client_app.send_task("examples.record", args=["<b>x</b>"], queue="default")
    done.get(timeout=30)
    viewer, token = logged_in(console, "viewer")
    html = viewer.get(f"/tasks?id={done.id}").get_data(as_text=True)
    assert '<dd id="state">SUCCESS</dd>' in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert 'id="revoke"' not in html
    assert viewer.get(f"/tasks/{done.id}/revoke").status_code == 403
    assert viewer.post(f"/tasks/{done.id}/revoke", data={"csrf_token": token}).status_code == 403
    admin, _token = logged_in(console, "admin")
    assert 'id="revoke-terminate"' in admin.get(f"/tasks?id={done.id}").get_data(as_text=True)
    assert admin.get(f"/tasks?id={'x' * 201}").status_code == 400


def test_revoke_confirms_first_then_the_worker_discards_the_task(
    console: Any, client_app: Any, state: redis.Redis, caplog: Any
) -> None:
    token = uuid.uuid4().hex[:8]
    held = client_app.send_task("examples.record", args=[token], queue="default", countdown=3)
    admin, csrf = logged_in(console, "admin")
    confirm = admin.get(f"/tasks/{held.id}/revoke?terminate=1").get_data(as_text=True)
    assert "receives SIGTERM" in confirm and "Nothing has changed yet." in confirm
    assert '<input type="hidden" name="terminate" value="1">' in confirm
    plain = admin.get(f"/tasks/{held.id}/revoke").get_data(as_text=True)
    assert "it runs to its end" in plain and 'name="terminate"' not in plain
    assert admin.post(f"/tasks/{held.id}/revoke").status_code == 400  # no CSRF token
    with caplog.at_level(logging.INFO, logger="worker_app.web.audit"):
        response = admin.post(f"/tasks/{held.id}/revoke", data={"csrf_token": csrf})
    assert response.status_code == 302 and f"/tasks?id={held.id}" in response.headers["Location"]
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Revoked {held.id}: 1 workers acknowledged." in page
    assert [r.getMessage() for r in caplog.records] == [
        f"admin revoked task {held.id}: 1 workers acknowledged"
    ]
    wait_until(lambda: held.state == "REVOKED", timeout=30, what="the held task revoked")
    assert records(state, f"ran:{token}") == []


def test_without_a_result_backend_the_page_says_so(
    store: DeadLetterStore, redis_server: RedisServer
) -> None:
    plain = create_app(Settings.from_env({"CELERY_BROKER_URL": redis_server.url(0)}))
    client, _token = logged_in(create_console(store, USERS, "k" * 40, plain), "viewer")
    html = client.get("/tasks?id=some-task").get_data(as_text=True)
    assert "This app has no result backend: task status is not recorded." in html
