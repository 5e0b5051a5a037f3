"""The CLI's errors are one line, with exit code 2: a Redis that does not answer (its URL
shown with the password masked, and what to check), a bad WORKER_APP_* value. ``--help`` and
``--version`` work whatever the environment; ``--debug`` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.support.ports import free_port
from worker_app.cli import masked

pytestmark = pytest.mark.bad_input


def cli(*args: str, **env: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "worker_app.cli", *args], capture_output=True, text=True,
        env={**os.environ, **env}, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "command", [("dlq", "list"), ("dlq", "show", "x"), ("dlq", "stats"), ("ping",)]
)
def test_an_unreachable_redis_is_one_line_naming_the_masked_url(command: tuple[str]) -> None:
    url = f"redis://celery:do-not-print-me@127.0.0.1:{free_port()}/0"
    proc = cli(*command, CELERY_BROKER_URL=url)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "do-not-print-me" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach Redis at {masked(url)} (")
    assert "CELERY_BROKER_URL" in line


def test_debug_shows_the_traceback() -> None:
    url = f"redis://celery:secret@127.0.0.1:{free_port()}/0"
    proc = cli("--debug", "dlq", "stats", CELERY_BROKER_URL=url)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_a_bad_setting_is_one_line_and_help_still_works() -> None:
    env = {"WORKER_APP_VISIBILITY_TIMEOUT": "abc"}
    assert cli("--help", **env).returncode == 0
    assert cli("dlq", "--help", **env).returncode == 0
    assert cli("--version", **env).stdout.startswith("worker-app, version ")
    proc = cli("dlq", "stats", **env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: WORKER_APP_VISIBILITY_TIMEOUT must be an integer, got 'abc'"]


def test_masked_hides_only_the_password() -> None:
    assert masked("redis://celery:s3cret@10.0.0.5:6379/0") == "redis://celery:****@10.0.0.5:6379/0"
    assert masked("redis://:s3cret@h:6379/0") == "redis://:****@h:6379/0"
    assert masked("redis://h:6379/0") == "redis://h:6379/0"
