"""Verifiers for the prometheus role: targets, rules, and a broken rule that changes nothing."""

import json
import os
import subprocess
import time
from pathlib import Path

import testinfra.utils.ansible_runner
import yaml

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")

SCENARIO = Path(__file__).resolve().parents[1]
RULES = SCENARIO.parents[3] / "prometheus" / "rules"
API = "http://127.0.0.1:9090"
BROKEN_RULE = """groups:
  - name: molecule-broken
    rules:
      - alert: Broken
        expr: rate(celery_task_failed_total[5m]
"""
EXTRA_RULE = """groups:
  - name: molecule-extra
    rules:
      - record: molecule:up:count
        expr: count(up)
"""


def api(host, path):
    return json.loads(host.check_output(f"curl -fsS {API}{path}"))["data"]


def wait_for(check, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1)


def rule_groups(host):
    return sorted(g["name"] for g in api(host, "/api/v1/rules")["groups"])


def expected_groups(directory):
    names = []
    for path in sorted(Path(directory).glob("*.yml")):
        names += [g["name"] for g in yaml.safe_load(path.read_text())["groups"]]
    return sorted(names)


def test_every_target_derived_from_the_inventory_is_up(host):
    def all_up():
        targets = api(host, "/api/v1/targets")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for(all_up)
    assert targets, api(host, "/api/v1/targets")
    by_job = {}
    for target in targets:
        by_job.setdefault(target["labels"]["job"], []).append(target["labels"])
    # One target per host of the inventory group, labelled with the host's name.
    hosts = sorted(testinfra_hosts)
    assert sorted(labels["host"] for labels in by_job["node"]) == hosts
    assert sorted(labels["host"] for labels in by_job["redis"]) == hosts
    assert {labels["service"] for labels in by_job["redis"]} == {"redis"}
    assert len(by_job["prometheus"]) == 1
    # The job with basic_auth: up, so Prometheus (as its user) read the password_file.
    assert sorted(labels["host"] for labels in by_job["node-with-auth"]) == hosts


def test_a_scrape_password_is_in_a_file_only_prometheus_reads(host):
    config = yaml.safe_load(host.file("/etc/prometheus/prometheus.yml").content_string)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "node-with-auth"]
    path = "/etc/prometheus/secrets/node-with-auth.password"
    assert job["basic_auth"] == {"username": "molecule", "password_file": path}
    assert (
        "molecule-scrape-secret-0001"
        not in host.file("/etc/prometheus/prometheus.yml").content_string
    )
    secret = host.file(path)
    assert (secret.user, secret.group, secret.mode) == ("root", "prometheus", 0o640)
    assert secret.content_string == "molecule-scrape-secret-0001"
    directory = host.file("/etc/prometheus/secrets")
    assert (directory.user, directory.group, directory.mode) == ("root", "prometheus", 0o750)


def test_rules_from_the_directory_are_loaded(host):
    assert wait_for(lambda: rule_groups(host) == expected_groups(RULES)), rule_groups(host)
    metrics = host.check_output(f"curl -fsS {API}/metrics")
    assert "prometheus_config_last_reload_successful 1" in metrics


def test_listens_on_the_configured_address_as_prometheus(host):
    listening = host.check_output("ss -Htln | awk '{print $4}'").split()
    assert [a for a in listening if a.endswith(":9090")] == ["127.0.0.1:9090"]
    assert host.check_output("ps -o user:20= -C prometheus").split() == ["prometheus"]
    flags = api(host, "/api/v1/status/flags")
    assert flags["storage.tsdb.retention.time"] == "15d"


def copy_rules(tmp_path, extra_name, extra_text):
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in RULES.glob("*.yml"):
        (rules / path.name).write_text(path.read_text())
    (rules / extra_name).write_text(extra_text)
    return rules


def apply_rules(host, rules):
    play = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(Path(INVENTORY).parent),
            "--limit",
            host.backend.get_hostname(),
            str(SCENARIO / "apply-rules.yml"),
            "-e",
            f"molecule_rules_dir={rules}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(SCENARIO.parents[2])},
    )
    return play.returncode, play.stdout + play.stderr


def test_a_new_rule_file_is_loaded_by_reload_not_restart(host, tmp_path):
    pid = host.check_output("pgrep -x prometheus")
    rules = copy_rules(tmp_path, "zz-extra.yml", EXTRA_RULE)
    rc, output = apply_rules(host, rules)
    assert rc == 0, output
    assert "molecule-extra" in rule_groups(host)
    assert host.check_output("pgrep -x prometheus") == pid
    # Back to the converged rules: the extra file is removed and the reload drops its group.
    rc, output = apply_rules(host, RULES)
    assert rc == 0, output
    assert rule_groups(host) == expected_groups(RULES)
    assert not host.file("/etc/prometheus/rules/zz-extra.yml").exists


def test_a_broken_rule_fails_the_play_and_the_running_config_stays(host, tmp_path):
    before_config = api(host, "/api/v1/status/config")["yaml"]
    before_rules = rule_groups(host)
    live = host.file("/etc/prometheus/prometheus.yml").sha256sum

    rc, output = apply_rules(host, copy_rules(tmp_path, "zz-broken.yml", BROKEN_RULE))
    assert rc == 2, output
    assert "Check the candidate configuration with promtool" in output
    assert "zz-broken.yml" in output and "FAILED" in output, output  # promtool's own message

    # Nothing reached the live configuration and Prometheus runs what it ran before.
    assert not host.file("/etc/prometheus/rules/zz-broken.yml").exists
    assert host.file("/etc/prometheus/prometheus.yml").sha256sum == live
    assert api(host, "/api/v1/status/config")["yaml"] == before_config
    assert rule_groups(host) == before_rules
    assert "Signal prometheus to reload" not in output


# Last: the alert's `for: 2m` has run during the converge and the tests above.
def test_alerts_are_sent_to_the_alertmanager(host):
    active = api(host, "/api/v1/alertmanagers")["activeAlertmanagers"]
    assert [a["url"] for a in active] == ["http://127.0.0.1:9093/api/v2/alerts"]

    # prepare.yml serves the catalogue's pools (worker_app_pool_info) through the node
    # exporter. No worker pool runs, so our rules fire CeleryWorkerPoolDown for each once its
    # `for: 2m` has passed; Alertmanager then holds it, sent by this Prometheus.
    catalogue = yaml.safe_load((SCENARIO.parents[3] / "worker_app" / "pools.yml").read_text())
    pools = {pool["name"] for pool in catalogue["pools"]}

    def received():
        out = host.run("curl -fsS http://127.0.0.1:9093/api/v2/alerts")
        alerts = json.loads(out.stdout) if out.rc == 0 else []
        return [a for a in alerts if a["labels"]["alertname"] == "CeleryWorkerPoolDown"]

    alerts = wait_for(received, seconds=240)
    assert alerts, "Alertmanager never received CeleryWorkerPoolDown"
    assert {a["labels"]["pool"] for a in alerts} == pools
    assert all(a["generatorURL"].startswith("http://") for a in alerts)
