"""End to end: `make up` brings the whole stack up in docker; demo load; checks; down.

Runs in its own compose project with its own secrets file and free ports, so a
developer's own `make up` stack is left alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.conftest import Stack
from tests.support.waiting import wait_until

# The first test pays for `make up` (image builds on a fresh machine).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


def test_secrets_file_is_private(stack: Stack) -> None:
    mode = Path(stack.env["STACK_ENV_FILE"]).stat().st_mode & 0o777
    assert mode == 0o600
    for key in ("REDIS_CELERY_PASSWORD", "REDIS_EXPORTER_PASSWORD", "FLOWER_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD", "CONSOLE_ADMIN_PASSWORD", "CONSOLE_VIEWER_PASSWORD",
                "CONSOLE_PROMETHEUS_PASSWORD", "CONSOLE_SECRET_KEY"):  # fmt: skip
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
    # Every pool of the catalogue, the fifth one (`reports`) included, has its own service.
    assert stack.catalogue.names[-1] == "reports"
    client = stack.redis()
    for queue in stack.catalogue.queue_names:
        owner = stack.catalogue.pool_of_queue(queue)
        assert owner is not None
        for i in range(10):
            key = f"worker_app:examples:ran:{demo_run}-{queue}-{i}"
            ran = wait_until(lambda k=key: client.lrange(k, 0, -1), timeout=120, what=key)
            pool, node = ran[0].decode().split(" ", 1)[1].split()
            assert pool == owner.name, (key, pool)
            assert node == f"{owner.name}@worker-{owner.name}"
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
    scrape_pools = {t["scrapePool"] for t in targets()}
    assert scrape_pools == {"celery-workers", "celery-exporter", "redis", "flower", "console",
                            "prometheus", "alertmanager"}  # fmt: skip
    # One job label for every Celery series (docs/metrics.md, "Coming from celery-exporter").
    celery = [t for t in targets() if t["scrapePool"] in ("celery-workers", "celery-exporter")]
    assert {t["labels"]["job"] for t in celery} == {"celery"}
    pools = sorted(t["labels"]["pool"] for t in targets() if t["scrapePool"] == "celery-workers")
    assert pools == sorted(stack.catalogue.names)


def test_the_exporter_serves_the_catalogue_and_every_queue(stack: Stack) -> None:
    def series(query: str) -> dict[str, dict[str, str]]:
        return {r["metric"]["queue_name"]: r["metric"] for r in stack.prom(query)}

    wanted = set(stack.catalogue.queue_names)
    info = wait_until(lambda: set(series("worker_app_pool_info")) == wanted or None,
                      timeout=60, what="worker_app_pool_info for every queue")  # fmt: skip
    assert info
    slo = series("worker_app_queue_wait_slo_seconds")
    reports = stack.catalogue.pool("reports")
    assert slo["reports"]["pool"] == "reports"
    assert slo["reports"]["severity"] == reports.wait_slo_severity
    value = stack.prom('worker_app_queue_wait_slo_seconds{queue_name="reports"}')[0]["value"][1]
    assert float(value) == reports.wait_slo_seconds
    assert set(series("celery_queue_length")) >= wanted


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


def test_alertmanager_is_healthy_and_prometheus_sends_to_it(stack: Stack) -> None:
    health = stack.run("compose", "ps", "--format", "{{.Service}} {{.Health}}")
    states = dict(line.split(" ", 1) for line in health.strip().splitlines())
    assert states["alertmanager"] == "healthy", health
    assert states["alert-log"] == "healthy", health

    def active() -> list[str]:
        status, body = stack.http("STACK_PROMETHEUS_PORT", "/api/v1/alertmanagers")
        assert status == 200, body
        return [a["url"] for a in json.loads(body)["data"]["activeAlertmanagers"]]

    assert wait_until(active, timeout=60, what="an active Alertmanager") == [
        "http://alertmanager:9093/api/v2/alerts"
    ]


def test_make_alerts_shows_what_reached_the_webhook_receiver(stack: Stack) -> None:
    name = f"E2EDelivery{uuid.uuid4().hex[:8]}"
    alert = [{"labels": {"alertname": name, "severity": "critical", "pool": "low"},
              "annotations": {"summary": "sent by the e2e test"}}]  # fmt: skip
    url = f"http://127.0.0.1:{stack.values['STACK_ALERTMANAGER_PORT']}/api/v2/alerts"
    request = urllib.request.Request(
        url, data=json.dumps(alert).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 200

    def delivered() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in stack.run("alerts", "--json").splitlines()]
        return [line for line in lines if line["alertname"] == name]

    # The critical route waits 10 s before its first notification.
    got = wait_until(delivered, timeout=90, interval=2, what=f"{name} in make alerts")
    assert got[0]["receiver"] == "critical"
    assert got[0]["labels"]["pool"] == "low"
    assert got[0]["annotations"] == {"summary": "sent by the e2e test"}
    readable = stack.run("alerts")
    assert name in readable and "sent by the e2e test" in readable, readable
