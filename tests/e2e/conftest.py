"""Fixtures for the end-to-end tests: one stack for the whole session."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.support import catalogue
from tests.support.ports import free_port
from worker_app.pools import Catalogue, parse_catalogue

ROOT = Path(__file__).resolve().parents[2]


class Stack:
    """The running e2e stack: its environment, and helpers to talk to it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.catalogue: Catalogue = parse_catalogue(
            yaml.safe_load(Path(env["WORKER_APP_POOLS_FILE"]).read_text())
        )
        values = dict(
            line.split("=", 1)
            for line in Path(env["STACK_ENV_FILE"]).read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        self.values = values

    def run(self, *args: str, timeout: float = 900) -> str:
        proc = subprocess.run(
            ["docker/stack.sh", *args], cwd=ROOT, env=self.env, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def client_app(self) -> Any:
        """A producer on the host, publishing to the stack's broker with its catalogue."""
        from worker_app.factory import create_app  # noqa: PLC0415
        from worker_app.settings import Settings  # noqa: PLC0415

        port, password = self.values["STACK_REDIS_PORT"], self.values["REDIS_CELERY_PASSWORD"]
        return create_app(
            Settings(
                broker_url=f"redis://celery:{password}@127.0.0.1:{port}/0",
                pools_file=self.env["WORKER_APP_POOLS_FILE"],
            )
        )

    def redis(self) -> redis.Redis:
        port = self.values["STACK_REDIS_PORT"]
        password = self.values["REDIS_CELERY_PASSWORD"]
        return redis.Redis.from_url(f"redis://celery:{password}@127.0.0.1:{port}/0")

    def http(
        self, port_key: str, path: str, auth: tuple[str, str] | None = None
    ) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.values[port_key]}{path}"
        request = urllib.request.Request(url)
        if auth:
            import base64  # noqa: PLC0415

            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def prom(self, query: str) -> list[dict[str, Any]]:
        status, body = self.http(
            "STACK_PROMETHEUS_PORT", "/api/v1/query?query=" + urllib.request.quote(query)
        )
        assert status == 200, body
        return list(json.loads(body)["data"]["result"])


PROJECT = "celery-stack-e2e"
# E2E_KEEP_STACK=1 leaves the stack up after the session, its environment here, for the next
# session to reuse (make compat after make test in .ci/run: one stack up for both).
KEPT_DIR = ROOT / "build" / "e2e-stack"
STACK_KEYS = ("WORKER_APP_POOLS_FILE", "STACK_PROJECT", "STACK_ENV_FILE", "STACK_REDIS_PORT",
              "STACK_FLOWER_PORT", "STACK_CONSOLE_PORT", "STACK_PROMETHEUS_PORT",
              "STACK_ALERTMANAGER_PORT", "STACK_GRAFANA_PORT")  # fmt: skip


def _project_containers(*flags: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", *flags, "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def _kept_stack() -> dict[str, str] | None:
    """The environment of a stack a previous session kept, if it still runs."""
    saved = KEPT_DIR / "stack.json"
    if not saved.is_file():
        return None
    env = {**os.environ, **json.loads(saved.read_text())}
    if _project_containers() and Stack(env).run("ps", "--format", "{{.Service}}").strip():
        return env
    saved.unlink()
    return None


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make up` in project celery-stack-e2e, with the packaged pool catalogue plus a fifth pool
    (`reports`, tests/support/catalogue.py); cleaned (down + volumes) afterwards, unless
    E2E_KEEP_STACK=1. A stack a previous session kept is used instead of a new one."""
    keep = os.environ.get("E2E_KEEP_STACK") == "1"
    env = _kept_stack()
    if env is None:
        if keep:
            shutil.rmtree(KEPT_DIR, ignore_errors=True)
            KEPT_DIR.mkdir(parents=True)
            workdir = KEPT_DIR
        else:
            workdir = tmp_path_factory.mktemp("stack")
        pools = catalogue.write(workdir / "pools.yml", catalogue.with_pool())
        env = {
            **os.environ,
            "WORKER_APP_POOLS_FILE": str(pools),
            "STACK_PROJECT": PROJECT,
            "STACK_ENV_FILE": str(workdir / "e2e.env"),
            "STACK_REDIS_PORT": str(free_port()),
            "STACK_FLOWER_PORT": str(free_port()),
            "STACK_CONSOLE_PORT": str(free_port()),
            "STACK_PROMETHEUS_PORT": str(free_port()),
            "STACK_ALERTMANAGER_PORT": str(free_port()),
            "STACK_GRAFANA_PORT": str(free_port()),
        }
        up = subprocess.run(["make", "up"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=1800, check=False)  # fmt: skip
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        assert "The Celery stack is up" in up.stdout
        # The console's URL and its users are printed with the other credentials.
        console = f"Console     http://127.0.0.1:{env['STACK_CONSOLE_PORT']}   user admin, "
        assert console in up.stdout and "user viewer (read-only), password " in up.stdout
    running = Stack(env)
    try:
        yield running
    finally:
        if keep and KEPT_DIR.is_dir():
            (KEPT_DIR / "stack.json").write_text(json.dumps({k: env[k] for k in STACK_KEYS}))
        else:
            running.run("clean")
            if Path(env["STACK_ENV_FILE"]).parent == KEPT_DIR:  # its secrets go with it
                shutil.rmtree(KEPT_DIR, ignore_errors=True)
            assert _project_containers("-a") == [], "containers left behind"


@pytest.fixture(scope="session")
def demo_run(stack: Stack) -> str:
    """Publish the demo mix once; returns its run id."""
    out = stack.run("demo", "--count", "10")
    match = re.search(r"\(run (\w+)\)", out)
    assert match, out
    return match.group(1)
