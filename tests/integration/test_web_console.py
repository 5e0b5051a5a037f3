"""The console's pages through Flask's test client, on a real Redis (the browser tests with
Chromium come with the rest of issue 21)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore
from worker_app.web.app import create_console
from worker_app.web.users import User, hash_password

pytestmark = pytest.mark.integration

PASSWORD = "admin-long-password"  # noqa: S105 - test credentials
USERS = {"admin": User("admin", hash_password(PASSWORD), "admin")}


@pytest.fixture
def store(redis_server: RedisServer) -> DeadLetterStore:
    store = DeadLetterStore(redis_server.client(3), prefix=f"w{uuid.uuid4().hex[:6]}")  # type: ignore[arg-type]
    now = time.time()
    for n in range(60):
        store.add(DeadLetter(id=f"id-{n}", reason="non_retryable", task_name=f"t.task{n % 3}",
                             task_id=f"id-{n}", queue="default", failed_at=now - 1000 + n,
                             args=[n], exception_type="app.Boom"))  # fmt: skip
    evil = ["<script>alert(1)</script>"]
    store.add(DeadLetter(id="evil", reason="non_retryable", task_name="t.evil", task_id="evil",
                         queue="default", failed_at=now, args=evil))  # fmt: skip
    return store


@pytest.fixture
def client(store: DeadLetterStore) -> Any:
    app = create_console(store, USERS, secret_key="k" * 40)
    return app.test_client()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: Any) -> None:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"name": "admin", "password": PASSWORD,
                                           "csrf_token": token})  # fmt: skip
    assert response.status_code == 302


def test_every_page_needs_a_login(client: Any) -> None:
    for path in ("/", "/dead-letters", "/dead-letters/id-1"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_wrong_password_or_a_missing_csrf_token_is_refused(client: Any) -> None:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    wrong = client.post("/login", data={"name": "admin", "password": "nope", "csrf_token": token})
    assert wrong.status_code == 401
    no_token = client.post("/login", data={"name": "admin", "password": PASSWORD})
    assert no_token.status_code == 400
    assert client.get("/dead-letters").status_code == 302  # still logged out


def test_the_list_filters_pages_and_escapes(client: Any) -> None:
    log_in(client)
    page = client.get("/dead-letters?task=t.task1&per_page=10")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "20 matching" in html and "page 1 of 2" in html
    assert html.count("/dead-letters/id-") == 10
    assert page.headers["X-Frame-Options"] == "DENY"
    everything = client.get("/dead-letters").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in everything
    assert "<script>alert(1)</script>" not in everything


def test_bad_requests_get_a_clear_4xx(client: Any) -> None:
    log_in(client)
    for query, message in (
        ("reason=boredom", "unknown reason"),
        ("older_than=yesterday", "is not a duration"),
        ("per_page=5000", "per_page must be between 1 and 200"),
        ("page=x", "invalid literal"),
        ("colour=red", "unknown filter"),
    ):
        response = client.get(f"/dead-letters?{query}")
        assert response.status_code == 400, query
        assert message in response.get_data(as_text=True), query
    assert client.get("/dead-letters/no-such-id").status_code == 404


def test_an_entry_page_shows_the_entry(client: Any) -> None:
    log_in(client)
    html = client.get("/dead-letters/evil").get_data(as_text=True)
    assert "t.evil" in html and "&lt;script&gt;" in html
