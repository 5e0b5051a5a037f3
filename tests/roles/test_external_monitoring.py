"""stack_monitoring: external — the team's own Prometheus, Grafana and Alertmanager.

The real wiring on a copy of inventories/staging with `stack_monitoring: external` in its
group_vars/all: the preflight needs no Grafana secret, and ansible/monitoring.yml runs for real
on the controller (the monitoring host's connection switched to local, the files written under
pytest's tmp_path) — it applies none of the alertmanager, prometheus and grafana roles and writes
the scrape targets, the snippet, the rules, the dashboards and the alert routing. A running
Prometheus reading those files is the monitoring_export molecule scenario's proof.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.roles.test_playbook_preflight import (
    SECRETS,
    assert_stopped_in_preflight,
    run,
    staging_copy,
)
from tests.roles.test_pool_wiring import evaluate
from tests.support.ansible_output import failure_message, recap

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_SECRETS = ("vault_grafana_admin_password", "vault_grafana_secret_key")
# The stack's own services: with external monitoring the team's Prometheus and Alertmanager
# scrape themselves.
EXPORTED_JOBS = {"celery-workers", "celery-exporter", "flower", "console", "redis", "node"}


def external_inventory(tmp_path: Path, value: str = "external") -> Path:
    secrets = {k: v for k, v in SECRETS.items() if k not in GRAFANA_SECRETS}
    inventory = staging_copy(tmp_path, secrets)
    main = inventory / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text() + f"stack_monitoring: {value}\n")
    return inventory


def export_paths(out: Path) -> dict[str, str]:
    """The role's destinations, under ``out`` (owned by whoever runs the tests)."""
    return {
        "monitoring_export_file_sd_dir": str(out / "prometheus" / "file_sd"),
        "monitoring_export_scrape_config_file": str(
            out / "prometheus" / "scrape_configs" / "celery-stack.yml"
        ),
        "monitoring_export_rules_dir": str(out / "prometheus" / "rules"),
        "monitoring_export_dashboards_dir": str(out / "grafana" / "dashboards"),
        "monitoring_export_alertmanager_file": str(
            out / "alertmanager" / "celery-stack_routing.yml"
        ),
        "monitoring_export_owner": pwd.getpwuid(os.getuid()).pw_name,
        "monitoring_export_group": grp.getgrgid(os.getgid()).gr_name,
    }  # fmt: skip


def run_monitoring_locally(inventory: Path, tmp_path: Path, out: Path) -> tuple[int, str]:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return run(
        "monitoring.yml", inventory, tmp_path, "-e", json.dumps({**local, **export_paths(out)})
    )


def tasks_run(output: str) -> list[str]:
    """``role : task`` of every task that ran (not skipped) on the monitoring host."""
    ran, current = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line[6 : line.index("]")]
        elif current and re.match(r"^(ok|changed): \[stg-broker-1\]", line):
            ran.append(current)
            current = None
    return ran


def expected_target_groups(inventory: Path) -> dict[str, list[dict[str, Any]]]:
    """What the bundled Prometheus (bundled mode, same inventory) scrapes for the exported
    jobs, expanded here from prometheus_scrape_jobs as roles/prometheus/README.md describes."""
    seen = evaluate(
        inventory,
        "{{ {'jobs': prometheus_scrape_jobs, 'groups': groups,"
        " 'addresses': dict(groups['all'] | zip(groups['all'] | map('extract', hostvars,"
        " 'prometheus_scrape_address')))} }}",
    )["stg-broker-1"]
    expected: dict[str, list[dict[str, Any]]] = {}
    for job in seen["jobs"]:
        found = []
        if job.get("targets"):
            found.append({"targets": job["targets"], "labels": dict(job.get("labels", {}))})
        for group in job.get("groups", []):
            for host in sorted(seen["groups"][group["name"]]):
                address = seen["addresses"][host]
                labels = {**job.get("labels", {}), **group.get("labels", {}), "host": host}
                targets = [f"{address}:{port}" for port in group["ports"]]
                if {"targets": targets, "labels": labels} not in found:
                    found.append({"targets": targets, "labels": labels})
        expected[job["name"]] = found
    return expected


def without_job(target_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"targets": g["targets"], "labels": {k: v for k, v in g["labels"].items() if k != "job"}}
        for g in target_groups
    ]


def test_external_monitoring_installs_none_and_writes_what_they_read(tmp_path: Path) -> None:
    inventory = external_inventory(tmp_path)
    # No Grafana secret is needed when the bundle installs no Grafana.
    rc, output = run("preflight.yml", inventory, tmp_path)
    assert rc == 0, output

    out = tmp_path / "out"
    rc, output = run_monitoring_locally(inventory, tmp_path, out)
    assert rc == 0, output
    ran = tasks_run(output)
    assert not [t for t in ran if t.split(" : ")[0] in ("alertmanager", "grafana")], ran
    # Of the prometheus role only its `targets` entry point runs (the shared expansion).
    prometheus = {
        t.split(" : ", 1)[1].split(" - ")[0] for t in ran if t.startswith("prometheus : ")
    }
    assert prometheus == {
        "Validating arguments against arg spec 'targets'",
        "Check the scrape jobs",
        "Expand the scrape jobs over the inventory",
    }, ran
    assert "monitoring_export : Write the file_sd target files, one per scrape job" in ran
    # The three roles are in the play, every task of theirs skipped.
    for role in ("alertmanager", "prometheus", "grafana"):
        assert f"TASK [{role} : " in output, role

    # file_sd: one file per job of the stack, the targets the bundled Prometheus would scrape,
    # each group labelled with its job (job="celery" for the workers and the broker exporter).
    file_sd = out / "prometheus" / "file_sd"
    files = {p.name: json.loads(p.read_text()) for p in file_sd.glob("*.json")}
    # Beside them, the console job's basic-auth password, for the snippet's password_file.
    password = file_sd / "celery-stack_console.password"
    assert sorted(p.name for p in file_sd.iterdir() if p.suffix != ".json") == [password.name]
    assert password.read_text() == SECRETS["vault_console_prometheus_password"]
    assert password.stat().st_mode & 0o777 == 0o640
    assert sorted(files) == sorted(f"celery-stack_{job}.json" for job in EXPORTED_JOBS)
    bundled = expected_target_groups(staging_copy(tmp_path / "bundled", SECRETS))
    for job in EXPORTED_JOBS:
        groups = files[f"celery-stack_{job}.json"]
        assert all(
            g["labels"]["job"] == ("celery" if job.startswith("celery") else job) for g in groups
        )
        assert without_job(groups) == without_job(bundled[job]), job
    workers = files["celery-stack_celery-workers.json"]
    assert {(g["labels"]["pool"], g["labels"]["host"]) for g in workers} == {
        ("critical", "stg-worker-1"), ("high", "stg-worker-1"),
        ("default", "stg-worker-2"), ("low", "stg-worker-2"),
    }  # fmt: skip
    assert {g["labels"]["component"] for g in workers} == {"worker"}
    nodes = files["celery-stack_node.json"]
    assert sorted(g["labels"]["host"] for g in nodes) == [
        "stg-broker-1",
        "stg-worker-1",
        "stg-worker-2",
    ]

    # The snippet: one job per file, job names prefixed, accepted by promtool.
    snippet_path = out / "prometheus" / "scrape_configs" / "celery-stack.yml"
    snippet = yaml.safe_load(snippet_path.read_text())
    assert {j["job_name"]: j["file_sd_configs"] for j in snippet["scrape_configs"]} == {
        f"celery-stack_{job}": [{"files": [str(file_sd / f"celery-stack_{job}.json")]}]
        for job in EXPORTED_JOBS
    }
    (console,) = [j for j in snippet["scrape_configs"] if j["job_name"] == "celery-stack_console"]
    assert console["basic_auth"] == {"username": "prometheus", "password_file": str(password)}
    check = subprocess.run(
        ["promtool", "check", "config", str(snippet_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # Rules (the suffix prometheus-community's role loads), dashboards, routing: our sources.
    rules = {p.name: p.read_text() for p in (out / "prometheus" / "rules").iterdir()}
    assert rules == {
        f"celery-stack_{p.stem}.rules": p.read_text()
        for p in (ROOT / "prometheus" / "rules").glob("*.yml")
    }
    dashboards = {p.name: p.read_text() for p in (out / "grafana" / "dashboards").iterdir()}
    assert dashboards == {
        f"celery-stack_{p.name}": p.read_text()
        for p in (ROOT / "grafana" / "dashboards").glob("*.json")
    }
    routing = yaml.safe_load((out / "alertmanager" / "celery-stack_routing.yml").read_text())
    assert routing == yaml.safe_load((ROOT / "alertmanager" / "routing.yml").read_text())

    # The second run changes nothing.
    rc, output = run_monitoring_locally(inventory, tmp_path, out)
    assert rc == 0, output
    assert recap(output)["stg-broker-1"]["changed"] == 0, output


@pytest.mark.bad_input
def test_a_bad_monitoring_switch_stops_the_preflight(tmp_path: Path) -> None:
    rc, output = run("site.yml", external_inventory(tmp_path, value="externel"), tmp_path)
    assert rc != 0
    assert "stack_monitoring=externel: expected `bundled`" in failure_message(output), output
    assert_stopped_in_preflight(output)
