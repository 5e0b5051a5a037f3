"""The console in the docker stack (`make up`): the generated credentials work, nothing is
served without them, and Prometheus scrapes its request metrics as its read-only user."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


def url(stack: Stack, path: str) -> str:
    return f"http://127.0.0.1:{stack.values['STACK_CONSOLE_PORT']}{path}"


def log_in(stack: Stack, name: str, password: str) -> tuple[requests.Session, int]:
    """A browser-like session after the login form: (session, the POST's status)."""
    session = requests.Session()
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', session.get(url(stack, "/login"), timeout=10).text
    )
    assert token
    response = session.post(
        url(stack, "/login"), data={"name": name, "password": password,
                                    "csrf_token": token.group(1)},
        allow_redirects=False, timeout=30,
    )  # fmt: skip
    return session, response.status_code


def test_the_console_logs_in_the_generated_admin(stack: Stack) -> None:
    session, status = log_in(stack, "admin", stack.values["CONSOLE_ADMIN_PASSWORD"])
    assert status == 302
    page = session.get(url(stack, "/dead-letters"), timeout=30)
    assert page.status_code == 200
    # The link to the stack's Flower, as the browser reaches it.
    assert f'href="http://127.0.0.1:{stack.values["STACK_FLOWER_PORT"]}"' in page.text
    _, status = log_in(stack, "viewer", stack.values["CONSOLE_VIEWER_PASSWORD"])
    assert status == 302


def test_the_console_refuses_no_or_wrong_credentials(stack: Stack) -> None:
    anonymous = requests.get(url(stack, "/dead-letters"), allow_redirects=False, timeout=10)
    assert anonymous.status_code == 302
    assert urllib.parse.urlsplit(anonymous.headers["Location"]).path == "/login"
    session, status = log_in(stack, "admin", "not-the-password")
    assert status != 302
    after = session.get(url(stack, "/dead-letters"), allow_redirects=False, timeout=10)
    assert after.status_code == 302
    for path in ("/api/health", "/metrics"):
        assert requests.get(url(stack, path), timeout=10).status_code == 401, path
        wrong = requests.get(url(stack, path), auth=("admin", "wrong-password"), timeout=10)
        assert wrong.status_code == 401, path


def test_prometheus_scrapes_the_console_as_its_read_only_user(stack: Stack) -> None:
    def console_targets() -> list[dict[str, Any]]:
        status, body = stack.http("STACK_PROMETHEUS_PORT", "/api/v1/targets")
        assert status == 200
        targets = json.loads(body)["data"]["activeTargets"]
        return [t for t in targets if t["scrapePool"] == "console"]

    found = wait_until(
        lambda: [t for t in console_targets() if t["health"] == "up"] or None,
        timeout=90, what="the console's target up in Prometheus",
    )  # fmt: skip
    assert [t["labels"]["host"] for t in found] == ["console"]
    assert stack.prom('up{job="console"}')[0]["value"][1] == "1"
