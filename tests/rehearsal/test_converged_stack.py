"""End-to-end checks of a converged rehearsal, from the controller."""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.rehearsal.conftest import ROOT, Rehearsal
from tests.rehearsal.inspection import configured_hosts, rehearsal_hosts
from tests.support.waiting import wait_until
from worker_app.beat_scheduler import (
    lock_key_of,
    lock_timeout_of,
    max_interval_of,
    schedule_key_of,
)


def records(rehearsal: Rehearsal, kind: str) -> list[str]:
    raw = rehearsal.redis().lrange(f"worker_app:examples:{kind}", 0, -1)
    return [value.decode().split(" ", 1)[1] for value in raw]


def test_a_task_on_each_queue_runs_on_a_host_of_that_pool(
    rehearsal: Rehearsal, client_app: Any
) -> None:
    owner = {queue: pool["name"] for pool in rehearsal.pools for queue in pool["queues"]}
    tokens = {queue: uuid.uuid4().hex[:8] for queue in owner}
    for queue, token in tokens.items():
        client_app.send_task("examples.record", args=[token], queue=queue)
    for queue, token in tokens.items():
        ran = wait_until(lambda t=token: records(rehearsal, f"ran:{t}"), timeout=60,
                         what=f"the {queue} task")  # fmt: skip
        pool, node = ran[0].split()
        assert pool == owner[queue]
        assert node.split("@", 1)[1] in rehearsal.group(f"workers_{pool}"), node


def test_a_failing_task_lands_in_the_dlq_and_replays(rehearsal: Rehearsal, client_app: Any) -> None:
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.always_fails", args=[token], queue="default")

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "worker_app.cli", "dlq", *args], env=rehearsal.client_env(),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def entry() -> dict[str, Any] | None:
        listed = json.loads(cli("list", "--json", "--limit", "1000"))
        return next((e for e in listed if e["args"] == [token]), None)

    dead = wait_until(entry, timeout=90, what="the dead letter")
    assert (dead["task_name"], dead["reason"]) == ("examples.always_fails", "retries_exhausted")
    rehearsal.redis().set(f"worker_app:examples:fixed:{token}", 1)  # the upstream is fixed
    assert f"replayed {dead['id']}" in cli("replay", dead["id"])
    wait_until(lambda: records(rehearsal, f"succeeded:{token}"), timeout=60,
               what="the replayed task")  # fmt: skip
    assert entry() is None


def test_prometheus_has_every_target_up_and_our_rules(rehearsal: Rehearsal) -> None:
    def targets() -> list[dict[str, Any]] | None:
        active = rehearsal.prometheus("/api/v1/targets")["activeTargets"]
        return active if active and all(t["health"] == "up" for t in active) else None

    up = wait_until(targets, timeout=120, interval=2, what="every target up")
    by_job: dict[str, list[str]] = {}
    for target in up:  # by scrape pool: the Celery ones share the job label "celery"
        by_job.setdefault(target["scrapePool"], []).append(target["labels"].get("host", ""))
    hosts = sorted(rehearsal.data["_meta"]["hostvars"])
    assert sorted(by_job["node"]) == hosts
    assert sorted(by_job["redis"]) == rehearsal.group("redis")
    sentinel = bool(rehearsal.hostvars(hosts[0]).get("stack_redis_sentinel"))
    assert sorted(by_job.get("redis-sentinel", [])) == (
        rehearsal.group("redis") if sentinel else []
    )
    assert sorted(by_job["flower"]) == rehearsal.group("flower")
    # The console's request metrics, scraped as its read-only Prometheus user (basic_auth).
    assert sorted(by_job["console"]) == rehearsal.group("flower")
    assert len(by_job["celery-exporter"]) == 1
    celery = [t for t in up if t["scrapePool"] in ("celery-workers", "celery-exporter")]
    assert {(t["labels"]["job"], t["labels"]["component"]) for t in celery} == {
        ("celery", "worker"), ("celery", "exporter")}  # fmt: skip
    workers = [t for t in up if t["scrapePool"] == "celery-workers"]
    for pool in rehearsal.pools:
        assert sorted(
            t["labels"]["host"] for t in workers if t["labels"]["pool"] == pool["name"]
        ) == rehearsal.group(f"workers_{pool['name']}")
    expected = sorted(
        group["name"]
        for path in sorted(Path(ROOT / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    )
    loaded = sorted(g["name"] for g in rehearsal.prometheus("/api/v1/rules")["groups"])
    assert loaded == expected


def test_flower_requires_authentication(rehearsal: Rehearsal) -> None:
    url = f"http://{rehearsal.address(rehearsal.group('flower')[0])}:5555/"
    assert rehearsal.http(url)[0] == 401
    assert rehearsal.http(url, ("admin", "wrong-password"))[0] == 401
    assert rehearsal.http(url, ("admin", rehearsal.secret("vault_flower_password")))[0] == 200


def test_prometheus_sends_to_the_alertmanager_with_our_routing(rehearsal: Rehearsal) -> None:
    monitoring = [rehearsal.address(host) for host in rehearsal.group("monitoring")]
    expected = sorted(f"http://{address}:9093/api/v2/alerts" for address in monitoring)

    def active() -> list[str] | None:
        found = sorted(
            a["url"] for a in rehearsal.prometheus("/api/v1/alertmanagers")["activeAlertmanagers"]
        )
        return found if found == expected else None

    assert wait_until(active, timeout=60, interval=2, what="the Alertmanagers in Prometheus")
    routing = yaml.safe_load((ROOT / "alertmanager" / "routing.yml").read_text())
    for address in monitoring:
        status, body = rehearsal.http(f"http://{address}:9093/api/v2/status")
        assert status == 200, body
        loaded = json.loads(body)
        config = yaml.safe_load(loaded["config"]["original"])
        assert [r["name"] for r in config["receivers"]] == ["critical", "warning"]
        assert [r["source_matchers"] for r in config["inhibit_rules"]] == [
            r["source_matchers"] for r in routing["inhibit_rules"]
        ]
        assert config["route"]["receiver"] == routing["route"]["receiver"]
        assert loaded["cluster"]["status"] == "disabled"


def test_beat_schedules_from_one_host_under_a_renewed_lock(
    rehearsal: Rehearsal, client_app: Any
) -> None:
    """Several Beat hosts only with a locking scheduler (RedBeat): one lock, renewed by the
    active Beat; the schedule is in Redis. (Both Beats running: test_hardening. The takeover
    itself: tests/integration/test_beat_failover.py and the chaos failover.)"""
    beat_hosts = rehearsal.group("beat")
    scheduler = rehearsal.hostvars(beat_hosts[0]).get("celery_beat_scheduler") or ""
    if "redbeat" not in scheduler.lower():
        assert len(beat_hosts) == 1, f"{beat_hosts}: several Beats without a lock"
        return
    conf, client = client_app.conf, rehearsal.redis()
    lock = lock_key_of(conf)
    timeout_ms = lock_timeout_of(conf) * 1000
    # RedBeat's schedule: a sorted set of its entries' keys (its key prefix + the entry name).
    scheduled = {member.decode() for member in client.zrange(schedule_key_of(conf), 0, -1)}
    wanted = {conf.redbeat_key_prefix + name for name in conf.beat_schedule}
    assert wanted and wanted <= scheduled, f"no Beat synced the schedule {wanted}: {scheduled}"
    samples = []
    deadline = time.monotonic() + 3 * max_interval_of(conf)
    while time.monotonic() < deadline:
        samples.append(int(client.pttl(lock)))
        time.sleep(0.5)
    assert all(0 < ttl <= timeout_ms for ttl in samples), (
        f"the lock lapsed or never expires: {samples}"
    )
    renewed = any(later > earlier for earlier, later in itertools.pairwise(samples))
    assert renewed, f"nobody renews the lock: {samples}"


# Runs in a container: the processes started from the application's virtualenv before its
# packages or its environment file last changed (they run old code or an old environment).
STALE = r"""
import glob, json, os, sys
venv, env_file = sys.argv[1], sys.argv[2]
boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
installs = glob.glob(venv + "/lib/python3*/site-packages/*.dist-info")
changed = max([os.stat(path).st_mtime for path in installs] + [os.stat(env_file).st_mtime])
found, stale = 0, []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if cmdline.startswith(venv + "/bin/"):
        found += 1
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if started + 1 < changed:  # /proc's boot time has a one-second resolution
            stale.append(f"{pid} {cmdline[:120]} started {changed - started:.0f} s before")
print(json.dumps({"found": found, "stale": stale}))
"""


def test_every_celery_process_runs_the_installed_application(rehearsal: Rehearsal) -> None:
    """Each process of the application (workers, Beat, Flower, the exporter) started after
    its packages and environment last changed: a converge restarts every one it changed,
    also where an earlier play of the run made the change (Beat on a worker host)."""
    configured = configured_hosts(rehearsal)
    hosts = rehearsal_hosts(rehearsal)
    problems, found = [], 0
    for name, config in configured.items():
        if "celery_app" not in config.roles:
            continue
        venv, env_file = config["celery_app_venv"], config["celery_app_env_file"]
        command = f"python3 -c {shlex.quote(STALE)} {shlex.quote(venv)} {shlex.quote(env_file)}"
        result = json.loads(hosts[name].testinfra.check_output(command))
        found += result["found"]
        problems += [f"{name}: {line}" for line in result["stale"]]
    assert found >= len(rehearsal.group("workers")), "no application process found"
    assert not problems, "\n".join(["processes on old code or environment:", *problems])
