"""The console's pages through Flask's test client, on a real Redis (the browser tests with
Chromium come with the rest of issue 21)."""

from __future__ import annotations

import html as html_module
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore
from worker_app.factory import create_app
from worker_app.settings import Settings
from worker_app.web.app import create_console
from worker_app.web.users import User, hash_password

pytestmark = pytest.mark.integration

PASSWORD = "admin-long-password"  # noqa: S105 - test credentials
USERS = {
    "admin": User("admin", hash_password(PASSWORD), "admin"),
    "viewer": User("viewer", hash_password(PASSWORD), "read-only"),
}


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
def client(store: DeadLetterStore, redis_server: RedisServer) -> Any:
    settings = Settings.from_env({"CELERY_BROKER_URL": redis_server.url(4),
                                  "WORKER_APP_TASK_MODULES": "worker_app.examples"})  # fmt: skip
    app = create_console(store, USERS, secret_key="k" * 40, celery_app=create_app(settings))
    return app.test_client()


def queued(redis_server: RedisServer) -> int:
    """Messages waiting on the default queue (its priority steps' lists)."""
    broker = redis_server.client(4)
    lists = [k for k in broker.scan_iter("default*") if re.fullmatch(rb"default(\x06\x16\d+)?", k)]
    return sum(int(broker.llen(key)) for key in lists)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: Any, name: str = "admin") -> str:
    """Log in as ``name``; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"name": name, "password": PASSWORD,
                                           "csrf_token": token})  # fmt: skip
    assert response.status_code == 302
    # Logging in starts a new session: its token comes with the next page.
    return csrf_of(client.get("/dead-letters").get_data(as_text=True))


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


def fields_of(html: str) -> dict[str, str]:
    """The entry page's ``<dt>``/``<dd>`` pairs, as text (tags dropped, spaces collapsed)."""
    pairs = re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", html, re.S)
    return {
        name: " ".join(html_module.unescape(re.sub(r"<[^>]+>", "", value)).split())
        for name, value in pairs
    }


def test_an_entry_page_shows_every_field_of_the_entry(client: Any, store: DeadLetterStore) -> None:
    published = datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC).timestamp()
    store.add(DeadLetter(
        id="full", reason="retries_exhausted", task_name="billing.charge", task_id="full",
        queue="critical", args=[42, "eur"], kwargs={"retry": True},
        exception_type="requests.Timeout", exception_message="read timed out",
        traceback="Traceback (most recent call last):\n  boom\nrequests.Timeout: read timed out",
        retries=5, first_published_at=published, failed_at=published + 125,
        hostname="critical@worker-7", replay_count=2, priority=6,
    ))  # fmt: skip
    log_in(client, "viewer")
    html = client.get("/dead-letters/full").get_data(as_text=True)
    fields = fields_of(html)
    assert fields["Id"] == "full" and fields["Task id"] == "full"
    assert fields["Queue"] == "critical" and fields["Priority"] == "6"
    assert fields["Reason"] == "retries_exhausted"
    assert fields["Exception"] == "requests.Timeout: read timed out"
    assert fields["Arguments"] == "[42, 'eur']"
    assert fields["Keyword arguments"] == "{'retry': True}"
    assert fields["Retries"] == "5" and fields["Replayed"] == "2 times"
    assert fields["First published at"].startswith("2026-12-01 03:04:05 UTC (")
    assert fields["Failed at"].startswith("2026-12-01 03:06:10 UTC (")
    assert fields["Failed at"].endswith(" ago)")
    assert fields["Host"] == "critical@worker-7"
    assert '<pre id="traceback">Traceback (most recent call last):\n  boom\n' in html
    assert str(int(published)) not in html  # no epoch seconds on the page

    store.add(DeadLetter(id="bare", reason="undecodable", task_name=None, task_id=None,
                         queue="default", failed_at=published, raw_body="\x00garbage",
                         content_type="application/x-evil"))  # fmt: skip
    html = client.get("/dead-letters/bare").get_data(as_text=True)
    fields = fields_of(html)
    assert fields["First published at"] == "not recorded"
    assert fields["Reason"] == "undecodable (cannot be replayed)"
    assert fields["Content type"] == "application/x-evil"
    assert fields["Exception"] == "none"
    assert "No traceback recorded." in html and "None" not in html
    assert '<pre id="raw-body">\x00garbage</pre>' in html


def test_the_list_shows_task_ids_and_readable_times(client: Any, store: DeadLetterStore) -> None:
    log_in(client, "viewer")
    html = client.get("/dead-letters?task=t.task0&per_page=200").get_data(as_text=True)
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)[1:]  # after the header row
    assert len(rows) == 20
    newest = store.get("id-57")  # t.task0 is every third: id-57 is its newest
    first = rows[0]
    assert '<td class="task-id"><code>id-57</code></td>' in first
    shown = datetime.fromtimestamp(newest.failed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f">{shown}</time>" in first
    assert re.search(r'<span class="age">(\d+ min|[1-5]?\d s) ago</span>', first), first
    assert '<span class="age">16 min ago</span>' in rows[-1]  # id-0 failed 1000 s ago
    assert str(int(newest.failed_at)) not in html


def test_the_login_page_shows_no_navigation_and_the_pages_are_styled(client: Any) -> None:
    login = client.get("/login").get_data(as_text=True)
    assert "<nav" not in login and 'href="/queues"' not in login
    assert '<link rel="stylesheet" href="/static/console.css">' in login
    log_in(client, "viewer")
    page = client.get("/dead-letters").get_data(as_text=True)
    assert '<nav><a href="/dead-letters">Dead letters</a>' in page and 'href="/queues"' in page
    css = client.get("/static/console.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert "tbody tr:nth-child(even)" in css.get_data(as_text=True)
    assert css.headers["Content-Security-Policy"].startswith("default-src 'self';")
    assert "<style" not in page and "style=" not in page and "<script" not in page


def test_an_admin_replays_and_deletes(
    client: Any, store: DeadLetterStore, redis_server: RedisServer, caplog: Any
) -> None:
    token = log_in(client)
    page = client.get("/dead-letters/id-7").get_data(as_text=True)
    assert 'id="replay"' in page and 'id="delete"' in page
    before = queued(redis_server)
    with caplog.at_level("INFO", logger="worker_app.web.audit"):
        replayed = client.post("/dead-letters/id-7/replay", data={"csrf_token": token})
        deleted = client.post("/dead-letters/id-8/delete", data={"csrf_token": token})
    assert replayed.status_code == deleted.status_code == 302
    assert queued(redis_server) == before + 1  # published, then removed
    assert client.get("/dead-letters/id-7").status_code == 404
    assert client.get("/dead-letters/id-8").status_code == 404
    assert "Replayed id-7." in client.get("/dead-letters").get_data(as_text=True)
    assert [r.getMessage() for r in caplog.records] == [
        "admin replayed dead letter id-7 (t.task1): 1 published, 1 removed",
        "admin deleted dead letter id-8: 1 removed",
    ]
    assert (
        client.post("/dead-letters/no-such/delete", data={"csrf_token": token}).status_code == 404
    )


def test_a_read_only_user_cannot_change_anything(
    client: Any, store: DeadLetterStore, redis_server: RedisServer
) -> None:
    token = log_in(client, "viewer")
    page = client.get("/dead-letters/id-7").get_data(as_text=True)
    assert "id-7" in page and 'id="replay"' not in page and 'id="delete"' not in page
    before = queued(redis_server)
    for action in ("replay", "delete"):
        assert (
            client.post(f"/dead-letters/id-7/{action}", data={"csrf_token": token}).status_code
            == 403
        )
    assert store.get("id-7").id == "id-7" and queued(redis_server) == before


def test_a_change_without_the_csrf_token_is_refused(client: Any, store: DeadLetterStore) -> None:
    log_in(client)
    assert client.post("/dead-letters/id-7/delete").status_code == 400
    assert (
        client.post("/dead-letters/id-7/delete", data={"csrf_token": "forged"}).status_code == 400
    )
    assert store.get("id-7").id == "id-7"


def test_a_bulk_delete_confirms_the_count_first(
    client: Any, store: DeadLetterStore, caplog: Any
) -> None:
    token = log_in(client)
    listing = client.get("/dead-letters?task=t.task2").get_data(as_text=True)
    assert 'id="bulk-delete"' in listing
    confirm = client.get("/dead-letters/bulk?action=delete&task=t.task2").get_data(as_text=True)
    assert (
        "This will delete 20 entries matching\ntask=t.task2.\nNothing has changed yet." in confirm
    )
    assert len(store) == 61  # the confirmation is a dry run
    form = {"csrf_token": token, "action": "delete", "task": "t.task2"}
    stale = client.post("/dead-letters/bulk", data={**form, "expected": "19"})
    assert stale.status_code == 409 and "nothing was changed" in stale.get_data(as_text=True)
    assert len(store) == 61
    with caplog.at_level("INFO", logger="worker_app.web.audit"):
        done = client.post("/dead-letters/bulk", data={**form, "expected": "20"})
    assert done.status_code == 302
    assert len(store) == 41
    assert not [e for e in store.iter_entries() if e.task_name == "t.task2"]
    assert "Deleted 20 of 20." in client.get("/dead-letters").get_data(as_text=True)
    assert [r.getMessage() for r in caplog.records] == [
        "admin delete {'task': 't.task2'}: 20 selected, 20 done, 0 kept, 0 skipped"
    ]


def test_a_bulk_replay_publishes_each_then_removes_it(
    client: Any, store: DeadLetterStore, redis_server: RedisServer
) -> None:
    token = log_in(client)
    before = queued(redis_server)
    form = {"csrf_token": token, "action": "replay", "task": "t.task0", "expected": "20"}
    assert client.post("/dead-letters/bulk", data=form).status_code == 302
    assert queued(redis_server) == before + 20
    assert len(store) == 41


def test_bulk_actions_are_for_admins_with_a_token(client: Any, store: DeadLetterStore) -> None:
    token = log_in(client, "viewer")
    assert 'id="bulk-delete"' not in client.get("/dead-letters").get_data(as_text=True)
    assert client.get("/dead-letters/bulk?action=delete").status_code == 403
    form = {"csrf_token": token, "action": "delete", "expected": "61"}
    assert client.post("/dead-letters/bulk", data=form).status_code == 403
    client.post("/logout", data={"csrf_token": token})
    token = log_in(client)
    assert (
        client.post("/dead-letters/bulk", data={"action": "delete", "expected": "61"}).status_code
        == 400
    )
    assert client.get("/dead-letters/bulk?action=explode").status_code == 400
    assert len(store) == 61


class FailingAfter:
    """A Celery app whose task publishes fail after ``n`` (the broker going away midway): its
    ``amqp.send_task_message``, through which every task publish goes."""

    def __init__(self, app: Any, n: int) -> None:
        self.app, self.left = app, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    @property
    def amqp(self) -> Any:
        outer = self

        class Amqp:
            def __getattr__(self, name: str) -> Any:
                return getattr(outer.app.amqp, name)

            def send_task_message(self, *args: Any, **kwargs: Any) -> Any:
                if outer.left == 0:
                    raise ConnectionError("the broker went away")
                outer.left -= 1
                return outer.app.amqp.send_task_message(*args, **kwargs)

        return Amqp()


def test_a_bulk_replay_failing_midway_leaves_the_rest(
    store: DeadLetterStore, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker_app.dlq import bulk  # noqa: PLC0415
    from worker_app.dlq.query import DeadLetterFilter, matching_ids  # noqa: PLC0415

    monkeypatch.setattr(bulk, "BATCH", 5)
    settings = Settings.from_env({"CELERY_BROKER_URL": redis_server.url(4),
                                  "WORKER_APP_TASK_MODULES": "worker_app.examples"})  # fmt: skip
    ids = matching_ids(store, DeadLetterFilter(task="t.task1"))
    queued = redis_server.client(4).llen("default")
    # The broker goes away at the third publish of the second batch.
    result = bulk.run_bulk(store, FailingAfter(create_app(settings), 7), "replay", ids)
    assert (result.selected, result.done) == (20, 5)
    assert result.error == f"ConnectionError: the broker went away (in the batch from {ids[5]})"
    assert matching_ids(store, DeadLetterFilter(task="t.task1")) == ids[5:]
    # The first batch was published; nothing of the failed batch reached Redis.
    assert redis_server.client(4).llen("default") - queued == 5
