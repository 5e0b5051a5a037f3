"""Verifiers for the broker_exporter role: it reaches Redis, counts what waits there and serves
the pool catalogue."""

import os
import re
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

URL = "http://127.0.0.1:9808/metrics"
CELERY = "--user celery --pass molecule-celery-secret-0001 --no-auth-warning"


def sample(host, pattern):
    for _ in range(30):
        out = host.run(f"curl -fsS {URL}")
        found = re.search(pattern, out.stdout, re.MULTILINE) if out.rc == 0 else None
        if found:
            return found.group(1)
        time.sleep(1)
    raise AssertionError(f"{pattern} never appeared at {URL}")


def test_reaches_the_broker(host):
    assert sample(host, r"^worker_app_exporter_broker_up (\S+)$") == "1.0"


def test_counts_messages_waiting_in_an_extra_queue(host):
    # `exports` is in no pool of the catalogue: watched because of --queue.
    pattern = r'^celery_queue_length\{queue_name="exports"\} (\S+)$'
    assert sample(host, pattern) == "0.0"
    host.run_expect([0], f"redis-cli {CELERY} lpush exports '{{}}' '{{}}' '{{}}'")
    try:
        deadline = time.monotonic() + 30
        while sample(host, pattern) != "3.0" and time.monotonic() < deadline:
            time.sleep(1)
        assert sample(host, pattern) == "3.0"
    finally:
        host.run(f"redis-cli {CELERY} del exports")


def test_serves_the_pool_catalogue(host):
    slo = (
        r"^worker_app_queue_wait_slo_seconds"
        r'\{pool="reports",queue_name="reports",severity="warning"\} (\S+)$'
    )
    assert sample(host, slo) == "60.0"
    info = r'^worker_app_pool_info\{pool="critical",queue_name="critical"\} (\S+)$'
    assert sample(host, info) == "1.0"


def test_runs_as_celery_and_binds_only_the_configured_address(host):
    sample(host, r"^worker_app_exporter_broker_up (\S+)$")
    rows = host.check_output("ps -eo user:20,args | grep '[w]orker-app exporter'").splitlines()
    assert {row.split()[0] for row in rows if "/bin/sh" not in row} == {"celery"}
    listening = host.check_output("ss -Htln | awk '{print $4}'").split()
    assert [a for a in listening if a.endswith(":9808")] == ["127.0.0.1:9808"]
