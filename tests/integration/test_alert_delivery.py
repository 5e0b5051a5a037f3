"""Alert delivery end to end, on real processes on 127.0.0.1.

A real redis-server, a real Celery worker per pool, the broker exporter (`worker-app exporter`)
and the Redis exporter are scraped by the real Prometheus binary with our rules; it sends to
the real Alertmanager binary running our route tree and inhibitions (alertmanager/routing.yml)
with two receivers that post to the stack's webhook receiver (docker/alertmanager/alert_log.py),
which logs each alert as a JSON line. Then:

1. the `low` pool stops: CeleryWorkerPoolDown fires and reaches the webhook (receiver
   `critical`) with its labels and annotations;
2. a backlog grows on `low` (its pool is down) and on `high` (its pool is up but drained):
   Prometheus fires CeleryBacklogGrowing for both, Alertmanager delivers `high`'s and holds
   back `low`'s, which the pool-down alert inhibits;
3. the pools are the packaged catalogue plus a fifth, `reports` (tests/support/catalogue.py,
   through WORKER_APP_POOLS_FILE), with a 1 s wait SLO: its worker consumes only `reports`, its
   node is scraped under its pool label, the exporter serves its queue and SLO, and tasks that
   wait behind a slow one fire CeleryQueueWaitSLOBreach for it — no rule names a pool.

Shortened for the test, plainly: every `for:` in a temporary copy of prometheus/rules is 15s
(the real ones are 1 to 15 minutes), the recording rules are evaluated every second like the
alerts (really every 30 s: their first evaluation can come 30 s after Prometheus starts, and
until then CeleryWorkerPoolDown's "pool known but never counted" branch holds for every pool,
longer than a 15 s `for:`), and Prometheus scrapes every 2 s. Everything else is the real
files: expressions, labels, annotations, the route tree (10 s group wait for critical, 1 min
for warnings) and the inhibitions. The test takes about three minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import StartWorker, records
from tests.support import catalogue
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.services import Service, binary, get_json, start_service
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
# The packaged pools plus `reports`, whose 1 s wait SLO a few tasks behind a slow one exceed.
CATALOGUE = catalogue.with_pool(wait_slo_seconds=1)
POOLS = tuple(pool["name"] for pool in CATALOGUE["pools"])
# Longer than Prometheus's own start (its first scrapes come a few seconds after its first rule
# evaluation, so `absent(up{...})` is briefly true): no alert fires from the start-up itself.
FOR = "15s"


@dataclass
class Alerting:
    """The running chain and how to read each link of it."""

    workers: dict[str, WorkerProcess]
    prometheus: str
    alertmanager: str
    webhook_log: Path
    worker_env: dict[str, str]

    def delivered(self, alertname: str) -> list[dict[str, Any]]:
        """Alerts the webhook receiver logged under ``alertname``, oldest first."""
        if not self.webhook_log.exists():
            return []
        lines = [json.loads(line) for line in self.webhook_log.read_text().splitlines()]
        return [a for a in lines if a["alertname"] == alertname]

    def firing_in_prometheus(self, alertname: str) -> list[dict[str, str]]:
        query = f'ALERTS{{alertname="{alertname}", alertstate="firing"}}'
        url = f"{self.prometheus}/api/v1/query?query={urllib.parse.quote(query)}"
        return [r["metric"] for r in get_json(url)["data"]["result"]]

    def in_alertmanager(self, alertname: str) -> list[dict[str, Any]]:
        matcher = urllib.parse.quote(f'alertname="{alertname}"')
        return list(get_json(f"{self.alertmanager}/api/v2/alerts?filter={matcher}"))

    def queue_length(self, queue: str) -> float:
        query = urllib.parse.quote(f'celery_queue_length{{queue_name="{queue}"}}')
        result = get_json(f"{self.prometheus}/api/v1/query?query={query}")["data"]["result"]
        return float(result[0]["value"][1]) if result else -1.0


def shortened_rules(target: Path) -> Path:
    """A copy of prometheus/rules with every `for:` set to FOR and every group evaluated at
    Prometheus's global interval (nothing else changed)."""
    target.mkdir()
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        text = re.sub(r"(?m)^(\s+for:) \S+$", rf"\1 {FOR}", path.read_text())
        text = re.sub(r"(?m)^\s+interval: \S+\n", "", text)
        (target / path.name).write_text(text)
    return target


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """Our route tree and inhibitions, after receivers that post to the webhook receiver."""
    routing = yaml.safe_load((ROOT / "alertmanager" / "routing.yml").read_text())
    receivers = [
        {"name": name, "webhook_configs": [{"url": f"{webhook_url}/{name}"}]}
        for name in ("critical", "warning")
    ]
    return {"receivers": receivers, **routing}


@pytest.fixture(scope="module")
def worker_env(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Every process of this module (workers, exporter, producer) reads CATALOGUE."""
    path = catalogue.write(tmp_path_factory.mktemp("catalogue") / "pools.yml", CATALOGUE)
    return {**worker_env, "WORKER_APP_POOLS_FILE": str(path)}


@pytest.fixture(scope="module")
def alerting(
    redis_server: RedisServer,
    worker_env: dict[str, str],
    start_pool_worker: StartWorker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Alerting]:
    work = tmp_path_factory.mktemp("alerting")
    services: list[Service] = []
    exporter: WorkerProcess | None = None
    try:
        workers, worker_ports = {}, {}
        for pool in POOLS:
            worker_ports[pool] = free_port()
            workers[pool] = start_pool_worker(
                pool, "--concurrency", "1", node=f"{pool}@alerts", metrics_port=worker_ports[pool]
            )
        exporter_port = free_port()
        exporter = start_worker(
            ["worker_app.cli", "exporter", "--port", str(exporter_port), "--no-events"],
            worker_env, work / "exporter.log", ready_text="exporter on http://",
        )  # fmt: skip

        redis_exporter_port = free_port()
        services.append(start_service(
            "redis-exporter",
            [binary("prometheus-redis-exporter", "prometheus-redis-exporter"),
             "-redis.addr", f"redis://127.0.0.1:{redis_server.port}",
             "-web.listen-address", f"127.0.0.1:{redis_exporter_port}"],
            work, f"http://127.0.0.1:{redis_exporter_port}/metrics",
        ))  # fmt: skip

        webhook_port = free_port()
        webhook_log = work / "webhook.jsonl"
        services.append(start_service(
            "alert-log",
            [sys.executable, str(ROOT / "docker" / "alertmanager" / "alert_log.py"),
             "--port", str(webhook_port), "--file", str(webhook_log)],
            work, f"http://127.0.0.1:{webhook_port}/",
        ))  # fmt: skip

        am_port = free_port()
        am_config = work / "alertmanager.yml"
        am_config.write_text(
            yaml.safe_dump(alertmanager_config(f"http://127.0.0.1:{webhook_port}"))
        )
        check = subprocess.run(
            [binary("amtool", "prometheus-alertmanager"), "check-config", str(am_config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        services.append(start_service(
            "alertmanager",
            [binary("prometheus-alertmanager", "prometheus-alertmanager"),
             f"--config.file={am_config}", f"--storage.path={work / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            work, f"http://127.0.0.1:{am_port}/-/ready",
        ))  # fmt: skip

        prom_port = free_port()
        prom_config = work / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump({
            # 2 s to answer: a worker's endpoint on a loaded 2-core machine can miss 1 s.
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(shortened_rules(work / "rules") / "*.yml")],
            "alerting": {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [
                {"job_name": "celery-workers", "static_configs": [
                    {"targets": [f"127.0.0.1:{worker_ports[pool]}"],
                     "labels": {"job": "celery", "component": "worker", "pool": pool}}
                    for pool in POOLS]},
                {"job_name": "celery-exporter",
                 "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"],
                                     "labels": {"job": "celery", "component": "exporter"}}]},
                {"job_name": "redis",
                 "static_configs": [{"targets": [f"127.0.0.1:{redis_exporter_port}"]}]},
            ],
        }))  # fmt: skip
        services.append(start_service(
            "prometheus",
            [binary("prometheus", "prometheus"), f"--config.file={prom_config}",
             f"--storage.tsdb.path={work / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            work, f"http://127.0.0.1:{prom_port}/-/ready",
        ))  # fmt: skip
        prometheus = f"http://127.0.0.1:{prom_port}"

        def all_up() -> bool:
            targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
            return len(targets) == len(POOLS) + 2 and all(t["health"] == "up" for t in targets)

        wait_until(all_up, timeout=60, interval=0.5, what="every target up")

        def every_pool_counted() -> bool:
            query = urllib.parse.quote("pool:celery_worker_up:sum")
            result = get_json(f"{prometheus}/api/v1/query?query={query}")["data"]["result"]
            return {r["metric"]["pool"]: r["value"][1] for r in result} == {
                pool: "1" for pool in POOLS
            }

        wait_until(every_pool_counted, timeout=60, interval=0.5,
                   what="every pool's worker counted by the recording rule")  # fmt: skip
        yield Alerting(
            workers=workers,
            prometheus=prometheus,
            alertmanager=f"http://127.0.0.1:{am_port}",
            webhook_log=webhook_log,
            worker_env=worker_env,
        )
    finally:
        for service in reversed(services):
            service.stop()
        if exporter is not None:
            exporter.stop()


def publish(client_app: Any, queue: str, count: int) -> None:
    for i in range(count):
        client_app.send_task("examples.record", args=[f"backlog-{queue}-{i}"], queue=queue)


def test_a_stopped_pool_reaches_the_webhook_with_its_labels_and_annotations(
    alerting: Alerting,
) -> None:
    assert alerting.delivered("CeleryWorkerPoolDown") == []
    alerting.workers["low"].stop()

    # The stopped pool's alert (another pool's scrape may fail on a loaded machine: not this
    # test's subject).
    def firing() -> list[dict[str, Any]]:
        return [
            a
            for a in alerting.delivered("CeleryWorkerPoolDown")
            if a["status"] == "firing" and a["labels"].get("pool") == "low"
        ]

    delivered = wait_until(firing, timeout=240, interval=1,
                           what="CeleryWorkerPoolDown at the webhook receiver")  # fmt: skip
    alert = delivered[0]
    assert alert["receiver"] == "critical"
    assert alert["labels"]["alertname"] == "CeleryWorkerPoolDown"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["pool"] == "low"
    assert alert["labels"]["queue_name"] == "low"
    assert alert["annotations"]["summary"] == "no worker of pool low is up"
    assert alert["annotations"]["description"].startswith(
        "Prometheus reaches no worker node of the low pool, so its queues are not consumed."
    )
    # Only the stopped pool: the running pools raised nothing.
    assert {a["labels"]["pool"] for a in alerting.delivered("CeleryWorkerPoolDown")} == {"low"}
    assert [a["status"] for a in alerting.delivered("CeleryWorkerPoolDown")] == ["firing"]


def test_an_inhibited_alert_fires_in_prometheus_but_is_not_delivered(
    alerting: Alerting, client_app: Any
) -> None:
    # The cause is firing: the low pool is down (previous test).
    assert [a["labels"]["pool"] for a in alerting.in_alertmanager("CeleryWorkerPoolDown")] == [
        "low"
    ]
    # The high pool stays up (its metrics answer) but stops consuming: a drained node.
    drain = subprocess.run(
        [sys.executable, "-m", "worker_app.cli", "node", "drain", "high@alerts"],
        env={**os.environ, **alerting.worker_env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert json.loads(drain.stdout)["cancelled"] == {"high@alerts": ["high"]}

    # A backlog over 100 that grows, on both queues.
    for queue in ("low", "high"):
        publish(client_app, queue, 110)
    for queue in ("low", "high"):
        wait_until(lambda q=queue: alerting.queue_length(q) >= 110, timeout=60, interval=0.5,
                   what=f"the {queue} backlog in Prometheus")  # fmt: skip
        publish(client_app, queue, 20)

    def both_in_alertmanager() -> dict[str, dict[str, Any]] | None:
        alerts = {a["labels"]["queue_name"]: a for a in alerting.in_alertmanager(
            "CeleryBacklogGrowing")}  # fmt: skip
        return alerts if set(alerts) == {"low", "high"} else None

    in_am = wait_until(both_in_alertmanager, timeout=120, interval=0.5,
                       what="both backlog alerts in Alertmanager")  # fmt: skip
    # Both are in Alertmanager, in the same group (grouped by alertname), and no notification
    # of it has gone out yet: the group's first notification will hold every alert of the group
    # that is not inhibited.
    assert alerting.delivered("CeleryBacklogGrowing") == [], "notified before both arrived"
    pool_down = alerting.in_alertmanager("CeleryWorkerPoolDown")[0]
    assert in_am["low"]["status"]["state"] == "suppressed"
    assert in_am["low"]["status"]["inhibitedBy"] == [pool_down["fingerprint"]]
    assert in_am["high"]["status"]["state"] == "active"

    delivered = wait_until(
        lambda: alerting.delivered("CeleryBacklogGrowing"),
        timeout=480, interval=1, what="CeleryBacklogGrowing at the webhook receiver",
    )  # fmt: skip
    assert [a["labels"]["queue_name"] for a in delivered] == ["high"]
    assert delivered[0]["receiver"] == "warning"
    assert delivered[0]["labels"]["severity"] == "warning"
    assert delivered[0]["annotations"]["summary"].startswith("high backlog keeps growing (")

    # Prometheus shows the inhibited one firing; Alertmanager still holds it back.
    firing = {m["queue_name"] for m in alerting.firing_in_prometheus("CeleryBacklogGrowing")}
    assert firing == {"low", "high"}
    low = next(a for a in alerting.in_alertmanager("CeleryBacklogGrowing")
               if a["labels"]["queue_name"] == "low")  # fmt: skip
    assert low["status"]["state"] == "suppressed"


def test_the_fifth_pool_is_consumed_scraped_exported_and_alerted_on(
    alerting: Alerting, client_app: Any, state: Any
) -> None:
    prometheus = alerting.prometheus

    def query(expr: str) -> list[dict[str, Any]]:
        url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
        return list(get_json(url)["data"]["result"])

    # Its worker consumes only its own queue, and its node is scraped under its pool label.
    assert [queue.name for queue in client_app.conf.task_queues][-1] == "reports"
    consumed = client_app.control.inspect(destination=["reports@alerts"], timeout=10)
    assert {node: [q["name"] for q in queues]
            for node, queues in (consumed.active_queues() or {}).items()} == {
        "reports@alerts": ["reports"]}  # fmt: skip
    probe = "fifth-pool-probe"
    client_app.send_task("examples.record", args=[probe], queue="reports")
    ran = wait_until(lambda: records(state, f"ran:{probe}"), timeout=60, what="the reports task")
    assert ran[0].split() == ["reports", "reports@alerts"]
    up = query('up{job="celery", component="worker", pool="reports"}')
    assert [float(r["value"][1]) for r in up] == [1.0]
    # The exporter serves its queue and the catalogue's SLO for it.
    assert wait_until(lambda: query('celery_queue_length{queue_name="reports"}'), timeout=30,
                      what="the reports queue in Prometheus")  # fmt: skip
    (slo,) = query('worker_app_queue_wait_slo_seconds{queue_name="reports"}')
    assert (slo["metric"]["pool"], float(slo["value"][1])) == ("reports", 1.0)
    # Tasks that wait behind a slow one exceed the 1 s SLO: the wait alert fires for reports.
    for round_ in range(3):
        client_app.send_task("examples.sleepy", args=[f"wait-{round_}", 3.0], queue="reports")
        for i in range(4):
            client_app.send_task("examples.record", args=[f"wait-{round_}-{i}"], queue="reports")

    def firing() -> list[dict[str, str]]:
        return [m for m in alerting.firing_in_prometheus("CeleryQueueWaitSLOBreach")
                if m["queue_name"] == "reports"]  # fmt: skip

    fired = wait_until(firing, timeout=240, interval=1, what="the reports wait alert firing")
    assert fired[0]["pool"] == "reports"
    assert fired[0]["severity"] == "warning"
    # Only queues over their own SLO: the other pools' queues are under theirs.
    assert {m["queue_name"] for m in alerting.firing_in_prometheus("CeleryQueueWaitSLOBreach")} == {
        "reports"
    }
