"""End to end: `make up` brings the whole stack up in docker; demo load; checks; down.

Runs in its own compose project with its own secrets file and free ports, so a
developer's own `make up` stack is left alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.ports import free_port
from tests.support.waiting import wait_until

# The first test pays for `make up` (image builds on a fresh machine).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ("critical", "high", "default", "low")


class Stack:
    """The running e2e stack: its environment, and helpers to talk to it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make up` in project celery-stack-e2e; cleaned (down + volumes) afterwards."""
    workdir = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "STACK_PROJECT": "celery-stack-e2e",
        "STACK_ENV_FILE": str(workdir / "e2e.env"),
        "STACK_REDIS_PORT": str(free_port()),
        "STACK_FLOWER_PORT": str(free_port()),
        "STACK_PROMETHEUS_PORT": str(free_port()),
        "STACK_GRAFANA_PORT": str(free_port()),
    }
    up = subprocess.run(["make", "up"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1800, check=False)  # fmt: skip
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
    assert "The Celery stack is up" in up.stdout
    running = Stack(env)
    try:
        yield running
    finally:
        running.run("clean")
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter",
             "label=com.docker.compose.project=celery-stack-e2e"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert left.stdout.strip() == "", "containers left behind"


@pytest.fixture(scope="module")
def demo_run(stack: Stack) -> str:
    """Publish the demo mix once; returns its run id."""
    out = stack.run("demo", "--count", "10")
    match = re.search(r"\(run (\w+)\)", out)
    assert match, out
    return match.group(1)


def test_secrets_file_is_private(stack: Stack) -> None:
    mode = Path(stack.env["STACK_ENV_FILE"]).stat().st_mode & 0o777
    assert mode == 0o600
    for key in ("REDIS_CELERY_PASSWORD", "REDIS_EXPORTER_PASSWORD", "FLOWER_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD"):  # fmt: skip
        assert len(stack.values[key]) >= 24


def test_redis_requires_acl_users(stack: Stack) -> None:
    port = stack.values["STACK_REDIS_PORT"]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=int(port)).ping()
    exporter = redis.Redis(
        host="127.0.0.1", port=int(port), username="exporter",
        password=stack.values["REDIS_EXPORTER_PASSWORD"],
    )  # fmt: skip
    assert exporter.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        exporter.set("e2e:write", 1)
    assert stack.redis().ping()


def test_each_pool_processed_only_its_own_queue(stack: Stack, demo_run: str) -> None:
    client = stack.redis()
    for queue in QUEUES:
        if queue == "critical":
            continue  # the demo sends notify_user there (checked below)
        for i in range(10):
            key = f"worker_app:examples:ran:{demo_run}-{queue}-{i}"
            ran = wait_until(lambda k=key: client.lrange(k, 0, -1), timeout=120, what=key)
            pool, node = ran[0].decode().split(" ", 1)[1].split()
            assert pool == queue, (key, pool)
            assert node == f"{queue}@worker-{queue}"
    notified = wait_until(
        lambda: len(client.lrange("worker_app:examples:notified", 0, -1)) >= 10, what="critical"
    )
    assert notified
    pools = {v.decode().split()[-1] for v in client.lrange("worker_app:examples:notified", 0, -1)}
    assert pools == {"critical"}


def test_dlq_holds_the_expected_entries_and_replay_succeeds(stack: Stack, demo_run: str) -> None:
    def entries() -> list[dict[str, Any]]:
        listed = json.loads(stack.run("dlq", "list", "--json", "--limit", "1000"))
        return [e for e in listed if demo_run in json.dumps(e["args"])]

    def four() -> list[dict[str, Any]] | None:
        found = entries()
        return found if len(found) >= 4 else None

    mine = wait_until(four, timeout=120, what="4 dead letters")
    reasons = sorted((e["task_name"], e["reason"]) for e in mine)
    assert reasons == [
        ("examples.always_fails", "retries_exhausted"),
        ("examples.always_fails", "retries_exhausted"),
        ("examples.invalid_input", "non_retryable"),
        ("examples.slow", "time_limit"),
    ]
    target = next(e for e in mine if e["task_name"] == "examples.always_fails")
    token = target["args"][0]
    client = stack.redis()
    client.set(f"worker_app:examples:fixed:{token}", 1)  # the upstream is fixed
    out = stack.run("dlq", "replay", target["id"])
    assert f"replayed {target['id']}" in out
    wait_until(lambda: client.lrange(f"worker_app:examples:succeeded:{token}", 0, -1),
               timeout=60, what="the replayed task")  # fmt: skip
    assert target["id"] not in {e["id"] for e in entries()}


def test_dlq_is_visible_in_prometheus(stack: Stack, demo_run: str) -> None:
    wait_until(
        lambda: any(float(r["value"][1]) >= 3 for r in stack.prom("worker_app_dlq_entries")),
        timeout=90, what="worker_app_dlq_entries in Prometheus",
    )  # fmt: skip
    wait_until(
        lambda: any(float(r["value"][1]) >= 4
                    for r in stack.prom("sum(worker_app_dlq_entries_written_total)")),
        timeout=90, what="worker_app_dlq_entries_written_total in Prometheus",
    )  # fmt: skip


def test_every_prometheus_target_is_up(stack: Stack) -> None:
    def targets() -> list[dict[str, Any]]:
        status, body = stack.http("STACK_PROMETHEUS_PORT", "/api/v1/targets")
        assert status == 200
        return list(json.loads(body)["data"]["activeTargets"])

    wait_until(lambda: all(t["health"] == "up" for t in targets()), timeout=90, what="targets")
    jobs = {t["labels"]["job"] for t in targets()}
    assert jobs == {"celery-workers", "celery-exporter", "redis", "flower", "prometheus"}
    assert len([t for t in targets() if t["labels"]["job"] == "celery-workers"]) == 4


def test_flower_requires_credentials(stack: Stack) -> None:
    status, _ = stack.http("STACK_FLOWER_PORT", "/")
    assert status == 401
    status, _ = stack.http("STACK_FLOWER_PORT", "/", auth=("admin", "wrong"))
    assert status == 401
    status, body = stack.http("STACK_FLOWER_PORT", "/workers",
                              auth=("admin", stack.values["FLOWER_PASSWORD"]))  # fmt: skip
    assert status == 200
    assert b"Flower" in body


def test_ports_are_published_on_loopback_only(stack: Stack) -> None:
    out = subprocess.run(
        ["docker", "ps", "--filter", "label=com.docker.compose.project=celery-stack-e2e",
         "--format", "{{.Ports}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    published = re.findall(r"([0-9.:\[\]]+):\d+->", out)
    assert published, out
    assert all(addr == "127.0.0.1" for addr in published), out
