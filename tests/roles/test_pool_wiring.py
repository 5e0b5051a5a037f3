"""The playbooks take their pools from the pool catalogue: a fifth pool is one catalogue entry
and one inventory group, a bad catalogue or a pool without hosts stops the preflight, and the
docker stack scrapes what the Prometheus role would.

Ansible evaluates the real wiring (ansible/group_vars/all/wiring.yml) against copies of
inventories/staging; no host is contacted (variables are read with the debug action, and
the preflight's checks run on the controller).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.roles.test_playbook_preflight import SECRETS, assert_stopped_in_preflight, run
from tests.support import catalogue
from tests.support.ansible_output import failure_message

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def inventory_with_reports(
    tmp_path: Path, data: dict[str, Any] | None = None, group: bool = True
) -> Path:
    """inventories/staging with its own catalogue (default: the packaged one plus `reports`)
    and, when ``group``, stg-worker-2 in workers_reports."""
    inventory = tmp_path / "staging"
    shutil.copytree(ROOT / "inventories" / "staging", inventory)
    (inventory / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(SECRETS))
    catalogue.write(inventory / "pools.yml", data or catalogue.with_pool())
    main = inventory / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text() + 'pool_catalogue_file: "{{ inventory_dir }}/pools.yml"\n')
    if group:
        hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
        hosts["all"]["children"]["workers"]["children"]["workers_reports"] = {
            "hosts": {"stg-worker-2": None}
        }
        (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return inventory


def evaluate(inventory: Path, expression: str) -> dict[str, Any]:
    """``expression`` (Jinja) as each inventory host sees it, with the real wiring."""
    proc = subprocess.run(
        [str(BIN / "ansible"), "-i", str(inventory), "--playbook-dir", str(ROOT / "ansible"),
         "-m", "ansible.builtin.debug", "-a", json.dumps({"msg": expression}), "all"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
             "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
             "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hosts = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
    return {host: result["msg"] for host, result in hosts.items()}


# Labels whose values the stack and the role share; the others (host, pool) differ per target.
SHARED_LABELS = ("job", "component")


def label_key(labels: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A target's label names, with the values of the shared ones."""
    return tuple(sorted((k, str(v) if k in SHARED_LABELS else "*") for k, v in labels.items()))


def scrape_targets(jobs: list[dict[str, Any]], groups: dict[str, list[str]]) -> dict[str, Any]:
    """{job: sorted (port, labels) pairs} of the Prometheus role's scrape jobs, expanded the way
    roles/prometheus/templates/prometheus.yml.j2 expands them (hosts become one label)."""
    found: dict[str, Any] = {}
    for job in jobs:
        pairs = [(t.rsplit(":", 1)[1], dict(job.get("labels", {}))) for t in job.get("targets", [])]
        for group in job.get("groups", []):
            for host in groups.get(group["name"], []):
                labels = {**job.get("labels", {}), **group.get("labels", {}), "host": host}
                pairs += [(str(port), labels) for port in group["ports"]]
        found[job["name"]] = sorted((port, label_key(labels)) for port, labels in pairs)
    return found


def test_a_fifth_pool_reaches_its_hosts_the_catalogue_and_the_scrape_jobs(tmp_path: Path) -> None:
    inventory = inventory_with_reports(tmp_path)
    seen = evaluate(
        inventory,
        "{{ {'pools': celery_worker_pools, 'catalogue': celery_app_pool_catalogue,"
        " 'jobs': prometheus_scrape_jobs} }}",
    )
    assert [p["name"] for p in seen["stg-worker-1"]["pools"]] == ["critical", "high"]
    assert seen["stg-worker-2"]["pools"] == [
        {"name": "default", "time_limit": 330, "metrics_port": 9813},
        {"name": "low", "time_limit": 1860, "metrics_port": 9814},
        {"name": "reports", "time_limit": 660, "metrics_port": 9815},
    ]
    for host in seen.values():  # every host installs the same catalogue
        assert host["catalogue"] == catalogue.with_pool()
    workers = next(j for j in seen["stg-broker-1"]["jobs"] if j["name"] == "celery-workers")
    assert {"name": "workers_reports", "ports": [9815], "labels": {"pool": "reports"}} in workers[
        "groups"
    ]
    rc, output = run("preflight.yml", inventory, tmp_path)
    assert rc == 0, output


@pytest.mark.bad_input
def test_a_bad_catalogue_stops_the_preflight_naming_the_pool_and_field(tmp_path: Path) -> None:
    bad = catalogue.with_pool(soft_time_limit=700)
    rc, output = run("site.yml", inventory_with_reports(tmp_path, bad), tmp_path)
    assert rc != 0
    assert (
        "pool 'reports': soft_time_limit (700) must be below time_limit (660)"
        in failure_message(output)
    ), output
    assert_stopped_in_preflight(output)


@pytest.mark.bad_input
def test_a_shared_metrics_port_stops_the_preflight(tmp_path: Path) -> None:
    bad = catalogue.with_pool(metrics_port=9814)
    rc, output = run("site.yml", inventory_with_reports(tmp_path, bad), tmp_path)
    assert rc != 0
    assert "pool 'reports': metrics_port: port 9814 is already used by pool 'low'" in (
        failure_message(output)
    ), output
    assert_stopped_in_preflight(output)


@pytest.mark.bad_input
def test_a_pool_without_hosts_stops_the_preflight(tmp_path: Path) -> None:
    rc, output = run("site.yml", inventory_with_reports(tmp_path, group=False), tmp_path)
    assert rc != 0
    assert "pools without hosts: ['workers_reports']" in failure_message(output), output
    assert_stopped_in_preflight(output)


@pytest.mark.bad_input
def test_a_host_group_of_no_pool_stops_the_preflight(tmp_path: Path) -> None:
    rc, output = run("site.yml", inventory_with_reports(tmp_path, catalogue.packaged()), tmp_path)
    assert rc != 0
    assert "workers_* groups of no pool in the catalogue: ['workers_reports']" in (
        failure_message(output)
    ), output
    assert_stopped_in_preflight(output)


def test_the_docker_stack_scrapes_what_the_prometheus_role_would(tmp_path: Path) -> None:
    """The stack's generated prometheus.yml has the role's jobs, ports and labels (but the
    node exporter: the stack has no host to watch), for the same catalogue."""
    data = catalogue.with_pool()
    inventory = inventory_with_reports(tmp_path, data)
    seen = evaluate(inventory, "{{ {'jobs': prometheus_scrape_jobs, 'groups': groups} }}")
    role = scrape_targets(seen["stg-broker-1"]["jobs"], seen["stg-broker-1"]["groups"])
    generated = tmp_path / "stack"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "stack_config.py"), "--out", str(generated)],
        env={**os.environ, "WORKER_APP_POOLS_FILE": str(inventory / "pools.yml")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stack = yaml.safe_load((generated / "prometheus.yml").read_text())
    docker: dict[str, Any] = {}
    for job in stack["scrape_configs"]:
        docker[job["job_name"]] = sorted(
            (target.rsplit(":", 1)[1], label_key(group.get("labels", {})))
            for group in job["static_configs"]
            for target in group["targets"]
        )
    assert set(role) - set(docker) == {"node"}
    # celery-exporter's dashboards read every Celery series from one job (docs/metrics.md).
    for name in ("celery-workers", "celery-exporter"):
        assert {dict(labels)["job"] for _port, labels in docker[name]} == {"celery"}, name
    # One host per service in the stack: compare each job's ports and label names per host.
    for name, targets in docker.items():
        assert sorted(set(targets)) == sorted(set(role[name])), name
    pools = {
        group["labels"]["pool"]: group["targets"]
        for job in stack["scrape_configs"] if job["job_name"] == "celery-workers"
        for group in job["static_configs"]
    }  # fmt: skip
    assert pools == {p["name"]: [f"worker-{p['name']}:{p['metrics_port']}"] for p in data["pools"]}
    assert (generated / "pools.yml").read_text().count("name: reports") == 1


def test_the_docker_stack_has_the_redis_roles_acl_users(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "docker" / "stack_config.py"), "--out", str(tmp_path)],
        env={**os.environ, "WORKER_APP_POOLS_FILE": ""}, check=True, timeout=60,
    )  # fmt: skip
    defaults = yaml.safe_load((ROOT / "roles" / "redis" / "defaults" / "main.yml").read_text())
    lines = [
        line.split(" ", 2)
        for line in (tmp_path / "redis-acl-rules").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert lines == [
        [defaults["redis_celery_user"], "REDIS_CELERY_PASSWORD",
         " ".join(defaults["redis_celery_acl"].split())],
        [defaults["redis_exporter_user"], "REDIS_EXPORTER_PASSWORD",
         " ".join(defaults["redis_exporter_acl"].split())],
    ]  # fmt: skip


@pytest.mark.bad_input
def test_a_bad_catalogue_stops_make_up_before_any_container(tmp_path: Path) -> None:
    bad = catalogue.write(tmp_path / "pools.yml", catalogue.with_pool(queues=["low"]))
    env = {
        **os.environ,
        "STACK_ENV_FILE": str(tmp_path / "e.env"),
        "STACK_PROJECT": "celery-stack-bad-input",
        "WORKER_APP_POOLS_FILE": str(bad),
    }
    proc = subprocess.run(
        ["docker/stack.sh", "up"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        f"the pool catalogue cannot be used: {bad}: pool 'reports': queues: 'low' is already "
        "consumed by pool 'low'"
    ) in proc.stderr
    assert "building" not in proc.stderr
    assert not (tmp_path / "e.env.stack" / "compose.workers.yaml").exists()
