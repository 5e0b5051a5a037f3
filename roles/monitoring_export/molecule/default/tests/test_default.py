"""Verifiers for monitoring_export: a Prometheus the bundle did not configure (prepare.yml) scrapes
every exported target and loads every exported rule group; the files land where the roles of the
team's own stack read them; a broken rule is refused and changes nothing."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner
import yaml

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")

SCENARIO = Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[3]
RULES = ROOT / "prometheus" / "rules"
DASHBOARDS = ROOT / "grafana" / "dashboards"
API = "http://127.0.0.1:9090"
FILE_SD = "/etc/prometheus/file_sd"
JOBS = ("celery-workers", "celery-exporter", "node")
BROKEN_RULE = """groups:
  - name: molecule-broken
    rules:
      - alert: Broken
        expr: rate(celery_task_failed_total[5m]
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


def exported_groups(host):
    """{job file: its target groups} as the role wrote them."""
    return {
        job: json.loads(host.file(f"{FILE_SD}/celery-stack_{job}.json").content_string)
        for job in JOBS
    }


def uses_snippet(host):
    """Prepare gave Prometheus 2.43+ (Debian 13) the role's snippet, 2.42 a job of its own."""
    config = yaml.safe_load(host.file("/etc/prometheus/prometheus.yml").content_string)
    return "scrape_config_files" in config


def rule_groups(host):
    return {g["name"]: g["file"] for g in api(host, "/api/v1/rules")["groups"]}


def expected_groups(directory):
    names = []
    for path in sorted(Path(directory).glob("*.yml")):
        names += [g["name"] for g in yaml.safe_load(path.read_text())["groups"]]
    return sorted(names)


def test_every_exported_target_is_scraped_with_its_labels(host):
    exported = exported_groups(host)
    wanted = [
        (job, target, group["labels"])
        for job, groups in exported.items()
        for group in groups
        for target in group["targets"]
    ]
    # One target group per host of the inventory group (labelled with its name), the static one.
    assert len(exported["celery-workers"]) == len(exported["node"]) == len(testinfra_hosts)
    assert all(g["labels"]["job"] == "celery" for g in exported["celery-workers"])
    assert exported["celery-exporter"] == [
        {"targets": ["127.0.0.1:9808"], "labels": {"job": "celery", "component": "exporter"}}
    ]

    def all_there():
        active = api(host, "/api/v1/targets")["activeTargets"]
        return (
            active
            if len(active) == len(wanted) and all(t["health"] != "unknown" for t in active)
            else None
        )

    active = wait_for(all_there)
    assert active, api(host, "/api/v1/targets")
    snippet = uses_snippet(host)
    for job, target, labels in wanted:
        public = {k: v for k, v in labels.items() if not k.startswith("__")}
        found = [
            t for t in active
            if t["labels"]["instance"] == target and t["labels"].items() >= public.items()
        ]  # fmt: skip
        assert len(found) == 1, (job, target, labels, active)
        # Debian 13: through the snippet, one scrape pool per file; Debian 12: the team's job.
        assert found[0]["scrapePool"] == (f"celery-stack_{job}" if snippet else "celery-stack")
        assert found[0]["scrapeUrl"] == f"http://{target}/metrics"
        if job == "node":  # what really runs there is up
            assert found[0]["health"] == "up", found[0]
    # The retired file_sd file is gone, so its target is too.
    assert not [t for t in active if t["labels"]["job"] == "retired"]


def test_every_exported_rule_group_is_loaded_beside_the_teams_own(host):
    def loaded():
        groups = rule_groups(host)
        ours = sorted(
            n for n, f in groups.items() if f.startswith("/etc/prometheus/rules/celery-stack_")
        )
        return groups if ours == expected_groups(RULES) else None

    groups = wait_for(loaded)
    assert groups, rule_groups(host)
    assert groups["team"] == "/etc/prometheus/rules/team.rules"
    assert "retired" not in groups
    # The role's handler reloaded the team's Prometheus after it wrote the rules.
    metrics = host.check_output(f"curl -fsS {API}/metrics")
    assert "prometheus_config_last_reload_successful 1" in metrics


def test_files_land_where_the_teams_roles_read_them(host):
    for path in RULES.glob("*.yml"):
        installed = host.file(f"/etc/prometheus/rules/celery-stack_{path.stem}.rules")
        assert installed.content_string == path.read_text()
        assert (installed.user, installed.group, installed.mode) == ("root", "root", 0o644)
    for path in DASHBOARDS.glob("*.json"):
        installed = host.file(f"/var/lib/grafana/dashboards/celery-stack_{path.name}")
        assert installed.content_string == path.read_text()
    provider = yaml.safe_load(
        host.file("/etc/grafana/provisioning/dashboards/celery-stack.yml").content_string
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["providers"][0]["folder"] == "Celery"
    routing = yaml.safe_load(host.file("/etc/alertmanager/celery-stack_routing.yml").content_string)
    assert routing == yaml.safe_load((ROOT / "alertmanager" / "routing.yml").read_text())
    snippet = yaml.safe_load(
        host.file("/etc/prometheus/scrape_configs/celery-stack.yml").content_string
    )
    assert [j["job_name"] for j in snippet["scrape_configs"]] == [f"celery-stack_{j}" for j in JOBS]
    # The team's directories keep their owner and mode; the missing ones were created.
    for name in ("file_sd", "rules", "scrape_configs"):
        directory = host.file(f"/etc/prometheus/{name}")
        assert (directory.user, directory.mode) == ("prometheus", 0o775), name
    assert host.file("/var/lib/grafana/dashboards").mode == 0o755
    # The team's own rule file stays; the export's older files are removed.
    assert host.file("/etc/prometheus/rules/team.rules").exists
    assert not host.file("/etc/prometheus/rules/celery-stack_retired.rules").exists
    assert not host.file(f"{FILE_SD}/celery-stack_retired.json").exists


@pytest.fixture(scope="module")
def broken_rule_applied(tmp_path_factory):
    """The role applied again, to every host at once, with a broken rule among ours; the rule
    groups each host's Prometheus had loaded before."""
    hosts = [
        testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)
        for name in testinfra_hosts
    ]
    before = {h.backend.get_hostname(): rule_groups(h) for h in hosts}
    rules = tmp_path_factory.mktemp("rules")
    shutil.copytree(RULES, rules, dirs_exist_ok=True)
    (rules / "zz-broken.yml").write_text(BROKEN_RULE)
    play = subprocess.run(
        ["ansible-playbook", "-i", str(Path(INVENTORY).parent), str(SCENARIO / "apply.yml"),
         "-e", f"molecule_rules_dir={rules}"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(SCENARIO.parents[2])},
    )  # fmt: skip
    return play.returncode, play.stdout + play.stderr, before


def test_a_broken_rule_is_refused_by_promtool_and_changes_nothing(host, broken_rule_applied):
    rc, output, before = broken_rule_applied
    assert rc == 2, output
    assert "Write the rule files (each checked with promtool first)" in output
    assert "failed to validate" in output, output
    assert "could not parse expression" in output, output  # promtool's own message
    assert "zz-broken" not in host.check_output("ls /etc/prometheus/rules")
    assert rule_groups(host) == before[host.backend.get_hostname()]
