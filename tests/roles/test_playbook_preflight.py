"""ansible/site.yml stops in its preflight play, before any host is touched, on bad inventories.

The inventory hosts (10.231.x) are never contacted: every preflight task is an assert that runs
on the controller, and any_errors_fatal ends the run at the first failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.roles.test_role_inputs import fake_wheelhouse
from tests.support.ansible_output import failure_message, recap
from tests.support.tls import tls_ca_tool

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "vault_rehearsal_only": False,
    "vault_redis_celery_password": "test-celery-password-0001",
    "vault_redis_exporter_password": "test-exporter-password-0001",
    "vault_flower_password": "test-flower-password-0001",
    "vault_grafana_admin_password": "test-grafana-password-0001",
    "vault_grafana_secret_key": "test-grafana-secret-key-0123456789abcdef",
    "vault_alertmanager_smtp_password": "test-smtp-password-0001",
    # The preflight reads the hashes' form (worker-app web hash-password's), never a password.
    "vault_console_users": [
        {"name": "admin", "password_hash": "scrypt:32768:8:1$test$" + "0" * 128, "role": "admin"}
    ],
    "vault_console_secret_key": "test-console-secret-key-0123456789abcdef",
    "vault_console_prometheus_password": "test-console-prometheus-0001",
    "vault_console_prometheus_password_hash": "scrypt:32768:8:1$test$" + "1" * 128,
}


def tls_secrets(days: int = 397) -> dict[str, object]:
    """A CA and a certificate per host of both example inventories (valid ``days``), as
    tools/secrets.sh writes them (both inventories run on TLS)."""
    tool = tls_ca_tool()
    ca_cert, ca_key = tool.new_ca("test CA")
    certs = {}
    for env_name in ("staging", "production"):
        hosts = yaml.safe_load((ROOT / "inventories" / env_name / "hosts.yml").read_text())
        for host, variables in hosts["all"]["hosts"].items():
            names = [host, variables["private_address"], "127.0.0.1", "localhost"]
            cert, key = tool.issue(ca_cert, ca_key, host, names, days)
            certs[host] = {"cert": cert, "key": key}
    return {"vault_tls_ca_cert": ca_cert, "vault_tls_ca_key": ca_key, "vault_tls_certs": certs}


SECRETS.update(tls_secrets())


def staging_copy(tmp_path: Path, secrets: dict[str, object]) -> Path:
    """inventories/staging with a plain (test) vault holding ``secrets``."""
    inventory = tmp_path / "staging"
    shutil.copytree(ROOT / "inventories" / "staging", inventory)
    (inventory / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(secrets))
    return inventory


def run(playbook: str, inventory: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    """ansible-playbook ansible/``playbook`` on ``inventory``; ``extra``: more arguments."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "STACK_VAULT_PASSWORD": "rehearsal-only-not-a-secret",
    }
    wheelhouse = fake_wheelhouse(tmp_path)  # what the celery_app preflight looks for
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         "--vault-password-file", str(ROOT / "tools" / "vault-password-from-env.sh"),
         "-e", f"celery_app_wheelhouse_src={wheelhouse}", *extra, str(ROOT / "ansible" / playbook)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def assert_stopped_in_preflight(output: str) -> None:
    hosts = recap(output)
    assert sorted(hosts) == ["stg-broker-1", "stg-worker-1", "stg-worker-2"], output
    assert all(h["changed"] == 0 and h["unreachable"] == 0 for h in hosts.values()), hosts
    assert any(h["failed"] for h in hosts.values()), hosts
    plays = {line.split("]")[0] for line in output.splitlines() if line.startswith("PLAY [")}
    assert plays == {"PLAY [Preflight"}, plays


@pytest.mark.bad_input
def test_a_missing_secret_stops_the_run_naming_it(tmp_path: Path) -> None:
    secrets = {k: v for k, v in SECRETS.items() if k != "vault_flower_password"}
    rc, output = run("site.yml", staging_copy(tmp_path, secrets), tmp_path)
    assert rc != 0
    assert "vault_flower_password is missing or empty" in failure_message(output), output
    assert_stopped_in_preflight(output)


@pytest.mark.bad_input
def test_a_missing_smarthost_password_stops_the_run_naming_it(tmp_path: Path) -> None:
    # The inventories log in to a smarthost for e-mail alerts, so its password is required.
    secrets = {k: v for k, v in SECRETS.items() if k != "vault_alertmanager_smtp_password"}
    rc, output = run("site.yml", staging_copy(tmp_path, secrets), tmp_path)
    assert rc != 0
    assert "alertmanager_smtp_auth_password must be set" in output, output
    assert_stopped_in_preflight(output)


@pytest.mark.bad_input
def test_the_rehearsal_vault_is_refused_outside_a_rehearsal(tmp_path: Path) -> None:
    rc, output = run("site.yml", ROOT / "inventories" / "staging", tmp_path)
    assert rc != 0
    assert "still holds the published rehearsal secrets" in failure_message(output), output
    assert_stopped_in_preflight(output)


@pytest.mark.bad_input
def test_two_beat_hosts_stop_the_run_before_any_host_changes(tmp_path: Path) -> None:
    inventory = staging_copy(tmp_path, SECRETS)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["all"]["children"]["beat"]["hosts"]["stg-worker-2"] = None
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    rc, output = run("site.yml", inventory, tmp_path)
    assert rc != 0
    message = failure_message(output)
    assert "The beat group has 2 hosts (stg-worker-1, stg-worker-2)" in message, output
    assert_stopped_in_preflight(output)


def test_a_good_inventory_passes_the_preflight(tmp_path: Path) -> None:
    rc, output = run("preflight.yml", staging_copy(tmp_path, SECRETS), tmp_path)
    assert rc == 0, output
    assert "failed=0" in output and "unreachable=0" in output


SENTINEL_SECRETS = {
    "vault_redis_replication_password": "test-replication-password-0001",
    "vault_redis_sentinel_password": "test-sentinel-password-0001",
    "vault_redis_sentinel_client_password": "test-sentinel-client-password-0001",
    "vault_redis_sentinel_exporter_password": "test-sentinel-exporter-password-0001",
}


def production_copy(tmp_path: Path, secrets: dict[str, object]) -> Path:
    """inventories/production (three Redis hosts with Sentinel) with a plain (test) vault."""
    inventory = tmp_path / "production"
    shutil.copytree(ROOT / "inventories" / "production", inventory)
    (inventory / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(secrets))
    return inventory


def test_the_production_inventory_with_its_vault_passes_the_preflight(tmp_path: Path) -> None:
    # Three Redis hosts with Sentinel; the repository's (rehearsal) vault holds every secret.
    rc, output = run("preflight.yml", ROOT / "inventories" / "production", tmp_path,
                     "-e", '{"stack_rehearsal": true}')  # fmt: skip
    assert rc == 0, output
    assert "failed=0" in output and "unreachable=0" in output
    assert "prd-redis-3" in recap(output)


@pytest.mark.bad_input
def test_a_missing_sentinel_secret_stops_the_run_naming_it(tmp_path: Path) -> None:
    secrets = {**SECRETS, **SENTINEL_SECRETS}
    del secrets["vault_redis_sentinel_client_password"]
    rc, output = run("preflight.yml", production_copy(tmp_path, secrets), tmp_path)
    assert rc != 0
    assert "vault_redis_sentinel_client_password is missing or empty" in failure_message(output), (
        output
    )


@pytest.mark.bad_input
def test_sentinel_with_two_redis_hosts_is_refused(tmp_path: Path) -> None:
    inventory = production_copy(tmp_path, {**SECRETS, **SENTINEL_SECRETS})
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    del hosts["all"]["children"]["redis"]["hosts"]["prd-redis-3"]
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    rc, output = run("preflight.yml", inventory, tmp_path)
    assert rc != 0
    assert "with stack_redis_sentinel: true an odd number, at least 3" in failure_message(output), (
        output
    )


@pytest.mark.bad_input
def test_a_quorum_above_the_number_of_sentinels_is_refused(tmp_path: Path) -> None:
    inventory = production_copy(tmp_path, {**SECRETS, **SENTINEL_SECRETS})
    rc, output = run("preflight.yml", inventory, tmp_path, "-e", "redis_sentinel_quorum=4")
    assert rc != 0
    assert "redis_sentinel_quorum=4 must be a majority" in failure_message(output), output


@pytest.mark.bad_input
def test_staging_stays_single_node(tmp_path: Path) -> None:
    # Without stack_redis_sentinel a second Redis host is refused, as before.
    inventory = staging_copy(tmp_path, SECRETS)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["all"]["children"]["redis"]["hosts"]["stg-worker-1"] = None
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    rc, output = run("preflight.yml", inventory, tmp_path)
    assert rc != 0
    assert "The inventory needs exactly one host in `redis` (has 2" in failure_message(output), (
        output
    )


def test_a_redis_certificate_that_expires_within_30_days_stops_the_preflight(
    tmp_path: Path,
) -> None:
    secrets = {**SECRETS, **tls_secrets(days=10)}
    rc, output = run("preflight.yml", staging_copy(tmp_path, secrets), tmp_path)
    assert rc != 0, output
    message = failure_message(output)
    assert "redis_tls_cert of stg-broker-1" in message and "days" in message, output
    assert "redis_tls_min_days_left (30)" in message, output


def test_a_redis_certificate_of_another_ca_stops_the_preflight(tmp_path: Path) -> None:
    other = tls_secrets()
    secrets = {**SECRETS, "vault_tls_certs": other["vault_tls_certs"]}
    rc, output = run("preflight.yml", staging_copy(tmp_path, secrets), tmp_path)
    assert rc != 0, output
    assert "be issued by redis_tls_ca_cert" in failure_message(output), output
