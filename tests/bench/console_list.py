"""`make bench` (i): the console's dead-letter list with 10,000 entries (issue 21 asks for under
200 ms a page): the page as a browser gets it (logged in, rendered) and the same through the JSON
API, unfiltered and filtered by task, on a real Redis; Flask's test client, so the figure is the
console's own work (no network, no server threads)."""

from __future__ import annotations

import base64
import re
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

from tests.support.redis_server import start_redis
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.writer import store_for
from worker_app.factory import create_app
from worker_app.settings import Settings
from worker_app.web.app import create_console
from worker_app.web.users import User, hash_password

PASSWORD = secrets.token_urlsafe(16)  # this run's only
TASKS = 5


def _log_in(client: Any) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page
    answer = client.post("/login", data={"name": "admin", "password": PASSWORD,
                                         "csrf_token": token.group(1)})  # fmt: skip
    assert answer.status_code == 302, answer.status_code


def bench_console_list(tmp: Path, entries: int, reads: int) -> dict[str, Any]:
    """Median wall time of page 3 (50 a page) of the list, four ways."""
    server = start_redis(tmp / "console-list")
    try:
        settings = Settings.from_env({"CELERY_BROKER_URL": server.url(0)})
        store = store_for(settings)
        now = time.time()
        for n in range(entries):
            store.add(DeadLetter(
                id=f"e-{n}", reason="retries_exhausted", task_name=f"bench.t{n % TASKS}",
                task_id=f"e-{n}", queue="default", failed_at=now - entries + n, args=[n],
                exception_type="TimeoutError", exception_message="upstream timed out",
                traceback="Traceback (most recent call last):\n" * 20,
            ), now=now)  # fmt: skip
        users = {"admin": User("admin", hash_password(PASSWORD), "admin")}
        console = create_console(store, users, "b" * 40, create_app(settings))
        browser, api = console.test_client(), console.test_client()
        _log_in(browser)
        credentials = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        basic = {"Authorization": f"Basic {credentials}"}
        paths = {
            "page": "/dead-letters?page=3",
            "page_by_task": "/dead-letters?page=3&task=bench.t1",
            "api": "/api/dead-letters?page=3",
            "api_by_task": "/api/dead-letters?page=3&task=bench.t1",
        }
        found = {}
        for name, path in paths.items():
            client, headers = (api, basic) if name.startswith("api") else (browser, {})
            times = []
            for _ in range(reads + 1):  # the first read warms the caches: not counted
                began = time.perf_counter()
                answer = client.get(path, headers=headers)
                times.append((time.perf_counter() - began) * 1000)
                assert answer.status_code == 200, (path, answer.status_code)
            found[f"{name}_ms"] = round(statistics.median(times[1:]), 1)
        return {"entries": entries, "reads": reads, **found}
    finally:
        server.stop()
