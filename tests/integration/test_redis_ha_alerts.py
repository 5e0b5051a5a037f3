"""The HA alert expressions (prometheus/rules/ha-alerts.yml) on real metrics: a real primary,
replica and Sentinel (``redis-server``, ``redis-server --sentinel``), Debian's
``prometheus-redis-exporter`` on each, scraped every second by the real ``prometheus``.

Each alert's ``expr`` (read from the rules file, without its ``for:``, which promtool's unit
tests cover) is queried: silent while all is well; then the replica lags (``DEBUG SLEEP`` on
it: RedisReplicaLagging), the quorum is raised above the Sentinels there are
(RedisSentinelQuorumLost), the primary is SIGKILLed (RedisReplicaLinkDown at once; Sentinel
promotes the replica: RedisFailoverHappened, and with no replica left
RedisSentinelNoHealthyReplica). This proves the metric and label names the rules rely on are
the ones the exporter really exports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.support.ports import free_port
from tests.support.services import Service, binary, get_json, start_service
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MASTER = "broker"


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((ROOT / "prometheus" / "rules" / "ha-alerts.yml").read_text())
    return {
        rule["alert"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def redis_process(workdir: Path, name: str, *args: str) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    argv = [binary("redis-server", "redis-server"), *args, "--bind", "127.0.0.1",
            "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir),
            "--logfile", str(workdir / f"{name}.log")]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    wait_until(up, timeout=15, what=f"{name} answers PING")
    return port, process


class Stack:
    def __init__(self, prom_port: int, ports: dict[str, int]) -> None:
        self.prom_port = prom_port
        self.ports = ports

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        result: list[dict[str, Any]] = get_json(url)["data"]["result"]
        return result

    def firing(self, alert: str) -> list[dict[str, str]]:
        return [sample["metric"] for sample in self.query(alert_exprs()[alert])]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = Path(tmp_path_factory.mktemp("redis-ha"))
    processes: list[subprocess.Popen[bytes]] = []
    services: list[Service] = []
    try:
        primary, process = redis_process(work, "primary")
        processes.append(process)
        replica, process = redis_process(
            work, "replica", "--replicaof", "127.0.0.1", str(primary),
            "--enable-debug-command", "local",
        )  # fmt: skip
        processes.append(process)
        sentinel_conf = work / "sentinel.conf"
        sentinel_conf.write_text(
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 2000\n"
            f"sentinel failover-timeout {MASTER} 6000\n"
        )
        sentinel, process = redis_process(work, "sentinel", str(sentinel_conf), "--sentinel")
        processes.append(process)
        ports = {"primary": primary, "replica": replica, "sentinel": sentinel}
        exporters: dict[str, int] = {}
        for name, port in ports.items():
            exporters[name] = free_port()
            services.append(start_service(
                f"exporter-{name}",
                [binary("prometheus-redis-exporter", "prometheus-redis-exporter"),
                 "-redis.addr", f"redis://127.0.0.1:{port}",
                 "-web.listen-address", f"127.0.0.1:{exporters[name]}"],
                work, f"http://127.0.0.1:{exporters[name]}/metrics",
            ))  # fmt: skip
        prom_port = free_port()
        config = work / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [
                {"job_name": "redis", "static_configs": [{"targets": [
                    f"127.0.0.1:{exporters['primary']}", f"127.0.0.1:{exporters['replica']}"]}]},
                {"job_name": "redis-sentinel", "static_configs": [{"targets": [
                    f"127.0.0.1:{exporters['sentinel']}"]}]},
            ],
        }))  # fmt: skip
        services.append(start_service(
            "prometheus",
            [binary("prometheus", "prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={work / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            work, f"http://127.0.0.1:{prom_port}/-/ready",
        ))  # fmt: skip
        yield Stack(prom_port, ports)
    finally:
        for service in services:
            service.stop(timeout=5)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_rules_names_exist_and_all_is_quiet_when_healthy(stack: Stack) -> None:
    names = {
        "redis_master_link_up": {"master_host", "master_port"},
        "redis_master_repl_offset": set(),
        "redis_connected_slave_lag_seconds": {"slave_ip", "slave_port", "slave_state"},
        "redis_connected_slave_offset_bytes": {"slave_ip", "slave_port", "slave_state"},
        "redis_sentinel_master_ckquorum_status": {"master_name", "message"},
        "redis_sentinel_master_ok_slaves": {"master_name", "master_address"},
        "redis_sentinel_master_status": {"master_name", "master_address", "master_status"},
    }
    for name, labels in names.items():
        samples = wait_until(lambda n=name: stack.query(n), timeout=30, what=f"{name} scraped")
        assert labels <= set(samples[0]["metric"]), (name, samples)
    print("\nexported and used by the rules: " + ", ".join(names))
    for alert in alert_exprs():
        if alert != "CeleryBeatLockNotHeld":  # worker_app's exporter: test_beat_failover.py
            assert stack.firing(alert) == [], alert


def test_a_lagging_replica(stack: Stack) -> None:
    replica = redis.Redis(port=stack.ports["replica"], socket_timeout=30)
    # Lag shows past 10 s: 20 s asleep leaves Prometheus a 10 s window to see it (under load).
    sleeper = threading.Thread(target=replica.execute_command, args=("DEBUG", "SLEEP", "20"))
    sleeper.start()
    try:
        lagging = wait_until(
            lambda: stack.firing("RedisReplicaLagging"), timeout=35, what="the lag seen"
        )
        assert lagging[0]["slave_port"] == str(stack.ports["replica"]), lagging
    finally:
        sleeper.join()


def test_quorum_lost_and_back(stack: Stack) -> None:
    sentinel = redis.Redis(port=stack.ports["sentinel"], decode_responses=True)
    sentinel.execute_command("SENTINEL", "SET", MASTER, "quorum", "2")  # one Sentinel runs
    try:
        lost = wait_until(
            lambda: stack.firing("RedisSentinelQuorumLost"), timeout=15, what="no quorum"
        )
        assert lost == [{"master_name": MASTER}], lost
    finally:
        sentinel.execute_command("SENTINEL", "SET", MASTER, "quorum", "1")
    wait_until(lambda: not stack.firing("RedisSentinelQuorumLost"), timeout=15, what="quorum")


def test_the_primary_dies_sentinel_fails_over(stack: Stack) -> None:
    primary = redis.Redis(port=stack.ports["primary"])
    pid = int(primary.info("server")["process_id"])
    primary.close()
    os.kill(pid, signal.SIGKILL)  # our own redis-server: no graceful shutdown
    down = wait_until(lambda: stack.firing("RedisReplicaLinkDown"), timeout=15, what="link down")
    assert down[0]["master_port"] == str(stack.ports["primary"]), down
    moved = wait_until(
        lambda: stack.firing("RedisFailoverHappened"), timeout=30, what="the failover"
    )
    assert moved == [{"master_name": MASTER}], moved
    address = stack.query("redis_sentinel_master_status")[0]["metric"]["master_address"]
    assert address == f"127.0.0.1:{stack.ports['replica']}", address
    alone = wait_until(
        lambda: stack.firing("RedisSentinelNoHealthyReplica"), timeout=30, what="no replica"
    )
    assert alone == [{"master_name": MASTER}], alone
