"""Verifiers for the grafana role (configuration only: no Grafana package source in CI)."""

import configparser
import json
import os
import subprocess
from pathlib import Path

import testinfra.utils.ansible_runner
import yaml

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[3]
DASHBOARDS = REPO / "grafana" / "dashboards"
PROVISIONING = REPO / "grafana" / "provisioning"
PASSWORD = "molecule-grafana-secret-0001"  # noqa: S105 - test-only secret


def ini(host):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(host.file("/etc/grafana/grafana.ini").content_string)
    return parser


def owned(host, path, user, group, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (user, group, mode), path


def test_grafana_ini_has_the_secret_and_no_anonymous_access(host):
    owned(host, "/etc/grafana/grafana.ini", "root", "grafana", 0o640)
    config = ini(host)
    assert config["security"]["admin_password"] == f'"""{PASSWORD}"""'
    assert config["security"]["admin_password"].strip('"') not in ("admin", "")
    assert len(config["security"]["secret_key"].strip('"')) >= 32
    assert config["auth.anonymous"]["enabled"] == "false"
    assert config["users"]["allow_sign_up"] == "false"
    assert config["server"]["http_addr"] == "127.0.0.1"
    assert config["paths"]["provisioning"] == "/etc/grafana/provisioning"


def test_provisioning_files_are_installed_and_parse(host):
    for source in sorted(PROVISIONING.glob("*/*.yml")):
        target = f"/etc/grafana/provisioning/{source.parent.name}/{source.name}"
        owned(host, target, "root", "grafana", 0o640)
        installed = yaml.safe_load(host.file(target).content_string)
        assert installed == yaml.safe_load(source.read_text())
    datasource = yaml.safe_load(
        host.file("/etc/grafana/provisioning/datasources/prometheus.yml").content_string
    )["datasources"][0]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "${PROMETHEUS_URL}")
    provider = yaml.safe_load(
        host.file("/etc/grafana/provisioning/dashboards/celery.yml").content_string
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboards_are_valid_json_identical_to_the_sources(host):
    owned(host, "/var/lib/grafana/dashboards", "root", "grafana", 0o750)
    sources = sorted(DASHBOARDS.glob("*.json"))
    assert sources
    for source in sources:
        target = f"/var/lib/grafana/dashboards/{source.name}"
        owned(host, target, "root", "grafana", 0o640)
        dashboard = json.loads(host.file(target).content_string)
        assert dashboard == json.loads(source.read_text())
        assert dashboard["uid"] and dashboard["panels"]


def test_program_gets_the_prometheus_url_and_waits_for_a_binary(host):
    program = host.file("/etc/supervisor/conf.d/grafana.conf").content_string
    assert 'PROMETHEUS_URL="http://10.0.0.9:9090"' in program
    assert "user=grafana" in program
    assert "autostart=false" in program  # no binary installed here
    assert "STOPPED" in host.run("supervisorctl status grafana").stdout
    owned(host, "/var/lib/grafana", "grafana", "grafana", 0o750)
    assert host.user("grafana").shell == "/usr/sbin/nologin"


def test_a_dashboard_that_is_not_json_never_lands(host, tmp_path):
    (tmp_path / "celery-overview.json").write_text('{"title": "truncated",')
    before = host.file("/var/lib/grafana/dashboards/celery-overview.json").sha256sum
    play = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(Path(INVENTORY).parent),
            "--limit",
            host.backend.get_hostname(),
            str(SCENARIO / "apply-dashboards.yml"),
            "-e",
            f"molecule_dashboards_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(SCENARIO.parents[2])},
    )
    output = play.stdout + play.stderr
    assert play.returncode == 2, output
    assert "failed to validate" in output
    assert host.file("/var/lib/grafana/dashboards/celery-overview.json").sha256sum == before
