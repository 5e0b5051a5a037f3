"""Role inputs: every default has a spec, and bad values stop the play with a clear message.

Bad values are tried with `ansible-playbook --check` against localhost: the argument spec
and the preflight asserts are the first tasks of each role, so the play stops before any
task could touch the machine (check mode is a second guard).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible_output import failure_message, recap

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_spec_and_every_spec_a_default(role: str) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) - set(options) == set(), "defaults without a spec"
    assert set(options) - set(defaults) == set(), "specs without a default"
    for name, spec in options.items():
        assert spec.get("description"), f"{name} has no description"


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_lists_every_variable(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text()
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    for name in defaults:
        assert f"`{name}`" in readme or f"`{name}` /" in readme or name in readme, name


GOOD_REDIS = {
    "redis_celery_password": "a-long-enough-celery-secret",
    "redis_exporter_password": "a-long-enough-exporter-secret",
}

GOOD_APP = {
    "celery_app_broker_url": "redis://celery:secret@10.0.0.5:6379/0",
    "celery_app_wheelhouse_src": "@wheelhouse",  # replaced by a real directory per test
}

HASH = "scrypt:32768:8:1$salt$" + "0" * 128  # the preflight reads its form, never checks it
GOOD_CONSOLE = {
    "console_users": [{"name": "admin", "password_hash": HASH, "role": "admin"}],
    "console_secret_key": "k" * 40,
}

GOOD_AM = {
    "alertmanager_receivers": [
        {"name": "critical", "webhook_urls": ["http://10.0.0.9:9095/critical"]},
        {"name": "warning", "webhook_urls": ["http://10.0.0.9:9095/warning"]},
    ],
}

BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("supervisor", {"supervisor_minfds": "many"}, "supervisor_minfds"),
    ("supervisor", {"supervisor_socket_mode": "0777"}, "supervisor_socket_mode"),
    ("supervisor", {"supervisor_service_manager": "upstart"}, "supervisor_service_manager"),
    ("supervisor", {"supervisor_programs": [{"command": "/bin/true"}]}, "name"),
    ("supervisor", {"supervisor_programs": [{"name": "a", "command": "x", "numprocs": 2}]},
     "process_name"),
    ("supervisor", {"supervisor_programs": [{"name": "a b", "command": "x"}]},
     "supervisor_programs"),
    ("redis", {}, "redis_celery_password"),
    ("redis", {**GOOD_REDIS, "redis_exporter_password": ""}, "redis_exporter_password"),
    ("redis", {**GOOD_REDIS, "redis_bind_addresses": ["0.0.0.0"]},  # noqa: S104 - refused
     "redis_bind_addresses"),
    ("redis", {**GOOD_REDIS, "redis_maxmemory_policy": "allkeys-lru"}, "redis_maxmemory_policy"),
    ("redis", {**GOOD_REDIS, "redis_port": "six"}, "redis_port"),
    ("celery_app", {}, "celery_app_broker_url"),
    ("celery_app", {"celery_app_broker_url": "redis://c:p@h:6379/0",
                    "celery_app_wheelhouse_src": "/nonexistent"}, "celery_app_wheelhouse_src"),
    ("celery_app", {**GOOD_APP, "celery_app_environment": ["A=1"]}, "celery_app_environment"),
    ("celery_app", {**GOOD_APP, "celery_app_broker_url": "sentinel://celery:p@10.0.0.5:26379/0"},
     "WORKER_APP_SENTINEL_MASTER"),
    ("celery_app", {**GOOD_APP, "celery_app_extra_packages": ["example-django-project"]},
     "no wheel for example-django-project"),
    ("celery_app", {**GOOD_APP, "celery_app_module": "proj; rm -rf /"}, "celery_app_module"),
    ("celery_app", {**GOOD_APP, "celery_app_module": "proj.celery:"}, "celery_app_module"),
    ("celery_app", {**GOOD_APP, "celery_app_environment": {"WORKER_APP_CELERY_APP": "proj"}},
     "must not set WORKER_APP_CELERY_APP"),
    ("celery_worker", {"celery_worker_pools": []}, "celery_worker_pools"),
    ("celery_worker", {"celery_worker_pools": [
        {"name": "Urgent-1", "time_limit": 5, "metrics_port": 9811}]}, "Urgent-1"),
    ("celery_worker", {"celery_worker_pools": [
        {"name": "reports", "time_limit": 0, "metrics_port": 9811}]}, "positive time_limit"),
    ("celery_worker", {"celery_worker_pools": [
        {"name": "default", "time_limit": 330, "metrics_port": 9813, "nodes": 2},
        {"name": "low", "time_limit": 1860, "metrics_port": 9814}]}, "overlap"),
    ("celery_worker", {"celery_worker_pools": [
        {"name": "default", "time_limit": "long", "metrics_port": 9813}]}, "time_limit"),
    ("celery_beat", {"celery_beat_scheduler": "django --pidfile=/tmp/beat.pid"},
     "celery_beat_scheduler"),
    ("celery_beat", {"celery_beat_app": "proj"}, "celery_beat_app is no longer read"),
    ("flower", {}, "flower_basic_auth_password"),
    ("flower", {"flower_basic_auth_password": "long-enough-secret", "flower_app": "proj"},
     "flower_app is no longer read"),
    ("flower", {"flower_basic_auth_password": "long-enough-secret",
                "flower_address": "0.0.0.0"}, "flower_address"),  # noqa: S104 - refused
    ("flower", {"flower_basic_auth_password": "long-enough-secret", "flower_port": "http"},
     "flower_port"),
    ("console", {"console_secret_key": "k" * 40}, "console_users must list"),
    ("console", {**GOOD_CONSOLE, "console_users": [
        {"name": "admin", "password_hash": "plain-text-password", "role": "admin"}]},
     "plain passwords are refused"),
    ("console", {**GOOD_CONSOLE, "console_users": [
        {"name": "a:b", "password_hash": HASH, "role": "admin"}]}, "without ':'"),
    ("console", {**GOOD_CONSOLE, "console_users": [
        {"name": "admin", "password_hash": HASH, "role": "root"}]}, "role"),
    ("console", {**GOOD_CONSOLE, "console_users": [
        {"name": "admin", "password_hash": HASH, "role": "admin"},
        {"name": "admin", "password_hash": HASH, "role": "read-only"}]}, "a unique name"),
    ("console", {**GOOD_CONSOLE, "console_secret_key": "short"}, "console_secret_key"),
    ("console", {**GOOD_CONSOLE, "console_address": "0.0.0.0"},  # noqa: S104 - refused
     "console_address"),
    ("console", {**GOOD_CONSOLE, "console_flower_url": "flower:5555"}, "console_flower_url"),
    ("console", {**GOOD_CONSOLE, "console_threads": 0}, "console_threads"),
    ("node_exporter", {"node_exporter_address": "0.0.0.0"},  # noqa: S104 - refused
     "node_exporter_address"),
    ("node_exporter", {"node_exporter_port": 91000}, "node_exporter_port"),
    ("redis_exporter", {}, "redis_exporter_redis_password"),
    ("redis_exporter", {"redis_exporter_redis_password": "secret",
                        "redis_exporter_redis_addr": "redis://exporter:secret@10.0.0.5:6379"},
     "redis_exporter_redis_addr"),
    ("prometheus", {"prometheus_retention_time": "two weeks"}, "prometheus_retention_time"),
    ("prometheus", {"prometheus_address": "0.0.0.0"}, "prometheus_address"),  # noqa: S104
    ("prometheus", {"prometheus_scrape_jobs": [
        {"name": "workers", "groups": [{"name": "workers_nowhere", "ports": [9811]}]}]},
     "workers_nowhere"),
    ("prometheus", {"prometheus_scrape_jobs": [{"targets": ["10.0.0.5:9100"]}]},
     "prometheus_scrape_jobs"),
    ("prometheus", {"prometheus_scrape_jobs": [
        {"name": "redis", "groups": [{"name": "all", "ports": ["redis"]}]}]}, "ports"),
    ("prometheus", {"prometheus_rules_src_dir": "/nonexistent/rules"}, "prometheus_rules_src_dir"),
    ("prometheus", {"prometheus_alertmanagers": ["http://10.0.0.9:9093"]},
     "prometheus_alertmanagers"),
    ("alertmanager", {}, "alertmanager_receivers"),
    ("alertmanager", {**GOOD_AM, "alertmanager_address": "0.0.0.0"},  # noqa: S104 - refused
     "alertmanager_address"),
    ("alertmanager", {**GOOD_AM, "alertmanager_port": "alerts"}, "alertmanager_port"),
    ("alertmanager", {**GOOD_AM, "alertmanager_retention": "five days"}, "alertmanager_retention"),
    ("alertmanager", {"alertmanager_receivers": [
        {"name": "critical", "email_to": ["oncall@example.com"]},
        {"name": "warning", "webhook_urls": ["http://10.0.0.9:9095/"]}]},
     "alertmanager_smtp_smarthost"),
    ("alertmanager", {**GOOD_AM, "alertmanager_smtp_smarthost": "smtp.example.com:587",
                      "alertmanager_smtp_from": "am@example.com",
                      "alertmanager_smtp_auth_username": "am@example.com"},
     "alertmanager_smtp_auth_password"),
    ("alertmanager", {"alertmanager_receivers": [
        {"name": "critical", "webhook_urls": ["10.0.0.9:9095/hook"]},
        {"name": "warning", "discard": True}]}, "webhook_urls"),
    ("alertmanager", {"alertmanager_receivers": [
        {"name": "critical", "webhook_urls": ["http://10.0.0.9:9095/"]},
        {"name": "critical", "webhook_urls": ["http://10.0.0.9:9096/"]}]},
     "alertmanager_receivers"),
    ("alertmanager", {"alertmanager_receivers": [
        {"name": "critical", "webhook_urls": ["http://10.0.0.9:9095/"]}, {"name": "warning"}]},
     "warning would reach nobody"),
    ("alertmanager", {**GOOD_AM, "alertmanager_route": ["receiver: warning"]},
     "alertmanager_route"),
    ("broker_exporter", {"broker_exporter_address": "0.0.0.0"},  # noqa: S104 - refused
     "broker_exporter_address"),
    ("broker_exporter", {"broker_exporter_events": "sometimes"}, "broker_exporter_events"),
    ("broker_exporter", {"broker_exporter_forget_worker_after": 10},
     "broker_exporter_forget_worker_after=10 must be 0 (never) or longer"),
    ("grafana", {}, "grafana_admin_password"),
    ("grafana", {"grafana_admin_password": "admin", "grafana_secret_key": "k" * 40},
     "grafana_admin_password"),
    ("grafana", {"grafana_admin_password": "a-long-admin-secret", "grafana_secret_key": "short"},
     "grafana_secret_key"),
    ("grafana", {"grafana_admin_password": "a-long-admin-secret", "grafana_secret_key": "k" * 40,
                 "grafana_address": "::"}, "grafana_address"),
    ("grafana", {"grafana_admin_password": "a-long-admin-secret", "grafana_secret_key": "k" * 40,
                 "grafana_install": "maybe"}, "grafana_install"),
    ("monitoring_export", {}, "monitoring_export_name"),
    ("monitoring_export", {"monitoring_export_name": "celery_stack"}, "monitoring_export_name"),
    ("monitoring_export", {"monitoring_export_name": "app",
                           "monitoring_export_rules_dir": "etc/prometheus/rules"},
     "monitoring_export_rules_dir"),
    ("monitoring_export", {"monitoring_export_name": "app", "monitoring_export_mode": "rw-r--r--"},
     "monitoring_export_mode"),
    ("monitoring_export", {"monitoring_export_name": "app",
                           "monitoring_export_rules_suffix": "rules"},
     "monitoring_export_rules_suffix"),
    ("monitoring_export", {"monitoring_export_name": "app",
                           "monitoring_export_dashboards_src_dir": "/nonexistent/dashboards"},
     "monitoring_export_dashboards_src_dir"),
    ("monitoring_export", {"monitoring_export_name": "app",
                           "monitoring_export_alertmanager_routing": {"receiver": "warning"}},
     "monitoring_export_alertmanager_routing"),
    ("monitoring_export", {"monitoring_export_name": "app", "monitoring_export_scrape_jobs": [
        {"name": "node", "groups": [{"name": "workers_nowhere", "ports": [9100]}]}]},
     "monitoring_export_scrape_jobs[0] (node)"),
]  # fmt: skip


def fake_wheelhouse(tmp_path: Path, *wheels: str) -> Path:
    """A wheelhouse as the celery_app preflight sees it: requirements.txt and wheel files
    (empty: only their names are read) for worker_app, flower and ``wheels``."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    (wheelhouse / "requirements.txt").write_text("celery==5.7.0\n")
    for name in ("worker_app-0.1.0-py3-none-any.whl", "flower-2.2.0-py2.py3-none-any.whl", *wheels):
        (wheelhouse / name).write_bytes(b"")
    return wheelhouse


BAD_IDS = [f"{role}-{message}-{n}" for n, (role, _, message) in enumerate(BAD_INPUTS)]


@pytest.mark.bad_input
@pytest.mark.parametrize(("role", "variables", "message"), BAD_INPUTS, ids=BAD_IDS)
def test_bad_input_fails_fast_with_the_variable_named(
    role: str, variables: dict[str, Any], message: str, tmp_path: Path
) -> None:
    playbook = tmp_path / "play.yml"
    play = {"name": "bad input", "hosts": "localhost", "gather_facts": False,
            "roles": [{"role": role}]}  # fmt: skip
    playbook.write_text(yaml.safe_dump([play]))
    wheelhouse = fake_wheelhouse(tmp_path)
    variables = {k: str(wheelhouse) if v == "@wheelhouse" else v for k, v in variables.items()}
    extra = tmp_path / "vars.yml"
    extra.write_text(yaml.safe_dump(variables))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}  # fmt: skip
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "ansible-playbook"), "--check", "-i", "localhost,", "-c", "local",
         "-e", f"@{extra}", str(playbook)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    # The failure's own message names the variable (not just the spec Ansible prints with it).
    assert message in failure_message(output), output
    # It stopped in validation or preflight: nothing was changed.
    assert recap(output) == {"localhost": {"changed": 0, "failed": 1, "unreachable": 0}}, output
    failed_task = [line for line in output.splitlines() if line.startswith("TASK [")][-1]
    assert "Validating arguments" in failed_task or "Check" in failed_task, failed_task


@pytest.mark.bad_input
def test_two_beat_hosts_stop_the_play(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(yaml.safe_dump({"beat": {"hosts": {"beat-1": local, "beat-2": local}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(
        [{"name": "two schedulers", "hosts": "beat", "gather_facts": False,
          "roles": [{"role": "celery_beat"}]}]
    ))  # fmt: skip
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "--check", "-i", str(inventory),
         str(playbook)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "The beat group has 2 hosts (beat-1, beat-2)" in failure_message(output), output
    assert recap(output) == {
        "beat-1": {"changed": 0, "failed": 1, "unreachable": 0},
        "beat-2": {"changed": 0, "failed": 1, "unreachable": 0},
    }, output
