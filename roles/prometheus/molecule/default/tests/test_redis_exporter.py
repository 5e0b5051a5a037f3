"""Verifiers for the redis_exporter role: it logs in, reports Redis, keeps its secret."""

import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

URL = "http://127.0.0.1:9121/metrics"
SECRET = "molecule-exporter-secret-0001"  # noqa: S105 - test-only secret


def scrape(host):
    for _ in range(30):
        out = host.run(f"curl -fsS {URL}")
        if out.rc == 0 and "redis_up" in out.stdout:
            return out.stdout
        time.sleep(1)
    raise AssertionError("redis exporter does not answer")


def test_logs_in_and_reports_redis(host):
    body = scrape(host)
    assert "redis_up 1" in body
    assert "redis_connected_clients" in body


def test_the_least_privilege_acl_refuses_none_of_its_commands(host):
    admin = "--user molecule-admin --pass molecule-admin-secret-0001 --no-auth-warning"
    # The redis verifier's refused commands are in the log: start from an empty one.
    host.run_expect([0], f"redis-cli -h 127.0.0.1 -p 6379 {admin} acl log reset")
    scrape(host)
    scrape(host)
    assert host.check_output(f"redis-cli -h 127.0.0.1 -p 6379 {admin} acl log") == ""


def test_password_stays_out_of_the_process_list(host):
    scrape(host)
    assert SECRET not in host.check_output("ps -eo args")
    env = host.file("/etc/prometheus/redis-exporter.env")
    assert (env.user, env.group, env.mode) == ("root", "prometheus", 0o640)


def test_runs_as_prometheus_and_binds_only_the_configured_address(host):
    scrape(host)
    users = host.check_output("ps -o user:20= -C prometheus-redis-exporter").split()
    assert users == ["prometheus"]
    listening = host.check_output("ss -Htln | awk '{print $4}'").split()
    assert [a for a in listening if a.endswith(":9121")] == ["127.0.0.1:9121"]
