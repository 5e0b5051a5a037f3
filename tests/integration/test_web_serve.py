"""``worker-app web serve``: the console on waitress in a real process, against a real Redis,
configured the way supervisor and the docker stack configure it (files named by environment
variables); a configuration it cannot use stops it with one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from worker_app.web.users import hash_password

pytestmark = pytest.mark.integration

PASSWORD = "serve-test-password-1"  # noqa: S105 - test credentials
FLOWER = "http://127.0.0.1:5555/flower"
WORKER_APP = str(Path(sys.executable).parent / "worker-app")


def console_env(tmp_path: Path, redis_server: RedisServer) -> dict[str, str]:
    users = tmp_path / "users.yml"
    users.write_text(
        f'users:\n  admin: {{password_hash: "{hash_password(PASSWORD)}", role: admin}}\n'
    )
    key = tmp_path / "secret-key"
    key.write_text("s" * 40 + "\n")
    for path in (users, key):
        path.chmod(0o600)
    return {
        **os.environ,
        "CELERY_BROKER_URL": redis_server.url(0),
        "WORKER_APP_TASK_MODULES": "worker_app.examples",
        "WORKER_APP_CONSOLE_USERS_FILE": str(users),
        "WORKER_APP_CONSOLE_SECRET_KEY_FILE": str(key),
        "WORKER_APP_CONSOLE_FLOWER_URL": FLOWER,
    }


@pytest.fixture
def served(tmp_path: Path, redis_server: RedisServer) -> Iterator[str]:
    """The console served by ``worker-app web serve`` on a free port: its base URL."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [WORKER_APP, "web", "serve", "--port", str(port), "--threads", "2"],
        env=console_env(tmp_path, redis_server), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                requests.get(f"{url}/login", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_serves_the_login_page_and_refuses_anonymous_access(served: str) -> None:
    login = requests.get(f"{served}/login", timeout=10)
    assert login.status_code == 200
    assert 'name="csrf_token"' in login.text
    assert login.headers["X-Frame-Options"] == "DENY"
    for path in ("/", "/dead-letters"):
        response = requests.get(f"{served}{path}", timeout=10, allow_redirects=False)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"], path


def test_a_user_of_the_file_logs_in_and_sees_the_flower_link(served: str) -> None:
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(f"{served}/login").text)
    assert token
    wrong = session.post(
        f"{served}/login", data={"name": "admin", "password": "not-the-password",
                                 "csrf_token": token.group(1)}, allow_redirects=False,
    )  # fmt: skip
    assert wrong.status_code != 302
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(f"{served}/login").text)
    assert token
    response = session.post(
        f"{served}/login", data={"name": "admin", "password": PASSWORD,
                                 "csrf_token": token.group(1)}, allow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 302
    page = session.get(f"{served}/dead-letters", timeout=10)
    assert page.status_code == 200
    assert f'href="{FLOWER}"' in page.text


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WORKER_APP, "web", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.bad_input
def test_a_bad_users_file_stops_it_with_one_line(tmp_path: Path, redis_server: RedisServer) -> None:
    env = console_env(tmp_path, redis_server)
    users = Path(env["WORKER_APP_CONSOLE_USERS_FILE"])
    users.write_text("users:\n  admin: {password: plain-text-password, role: admin}\n")
    proc = run_serve(env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "WORKER_APP_CONSOLE_USERS_FILE" in lines[0] and str(users) in lines[0]
    assert "plain passwords are refused" in lines[0]


@pytest.mark.bad_input
def test_a_missing_or_short_secret_key_stops_it_with_one_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = console_env(tmp_path, redis_server)
    missing = str(tmp_path / "no-such-key")
    proc = run_serve({**env, "WORKER_APP_CONSOLE_SECRET_KEY_FILE": missing})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"Error: WORKER_APP_CONSOLE_SECRET_KEY_FILE={missing}: cannot read the secret key "
        "file: No such file or directory"
    )
    Path(env["WORKER_APP_CONSOLE_SECRET_KEY_FILE"]).write_text("short\n")
    proc = run_serve(env)
    assert proc.returncode == 2
    assert "at least 32 needed" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_serve({k: v for k, v in env.items() if k != "WORKER_APP_CONSOLE_USERS_FILE"})
    assert proc.returncode == 2
    assert "WORKER_APP_CONSOLE_USERS_FILE is not set" in proc.stderr
