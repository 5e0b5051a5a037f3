"""Verifiers for the flower role: authentication, metrics, binding, state."""

import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

URL = "http://127.0.0.1:5555"
GOOD = "admin:molecule-flower-secret-0001"


def status(host, path, auth=None):
    user = f"-u {auth}" if auth else ""
    for _ in range(30):
        out = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' {user} {URL}{path}")
        if out.stdout.strip() not in ("", "000"):
            return int(out.stdout.strip())
        time.sleep(1)
    raise AssertionError("Flower does not answer")


def test_requires_credentials(host):
    assert status(host, "/") == 401
    assert status(host, "/", "admin:wrong") == 401
    assert status(host, "/", GOOD) == 200


def test_api_needs_auth_and_metrics_answer(host):
    assert status(host, "/api/workers") == 401
    assert status(host, "/api/workers", GOOD) == 200
    # Flower 2.2 serves /metrics without authentication (by design, for scrapers): it must
    # therefore only be reachable on the private address Flower binds to.
    body = host.check_output(f"curl -fsS {URL}/metrics")
    assert "flower_" in body


def test_binds_only_the_configured_address(host):
    status(host, "/", GOOD)
    listening = host.check_output("ss -Htln | awk '{print $4}'").split()
    assert [a for a in listening if a.endswith(":5555")] == ["127.0.0.1:5555"]


def test_runs_as_service_user_with_private_state(host, app_module):
    # The host's app: `celery -A <celery_app_module> flower`.
    lines = host.check_output(f"ps -eo user:20,args | grep '[c]elery -A {app_module} flower'")
    lines = lines.splitlines()
    rows = [line for line in lines if "/bin/sh" not in line]
    assert [row.split()[0] for row in rows] == ["celery"]
    state = host.file("/var/lib/flower")
    assert (state.user, state.mode) == ("celery", 0o750)
    creds = host.file("/etc/worker-app/flower.env")
    assert (creds.user, creds.group, creds.mode) == ("root", "celery", 0o640)
