"""Verifiers for the node_exporter role: metrics, textfile collector, user, binding."""

import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

URL = "http://127.0.0.1:9100/metrics"


def scrape(host):
    for _ in range(30):
        out = host.run(f"curl -fsS {URL}")
        if out.rc == 0:
            return out.stdout
        time.sleep(1)
    raise AssertionError("node exporter does not answer")


def test_serves_host_metrics(host):
    body = scrape(host)
    assert "node_exporter_build_info" in body
    assert "node_cpu_seconds_total" in body
    assert "node_hwmon" not in body  # the extra flag reached the command line


def test_textfile_collector_reads_the_directory(host):
    path = "/var/lib/prometheus/node-exporter/molecule.prom"
    host.run_expect([0], f"echo 'molecule_probe_value 42' > {path}.tmp && mv {path}.tmp {path}")
    try:
        assert "molecule_probe_value 42" in scrape(host)
    finally:
        host.run(f"rm -f {path}")


def test_runs_as_prometheus_and_binds_only_the_configured_address(host):
    scrape(host)
    users = host.check_output("ps -o user:20= -C prometheus-node-exporter").split()
    assert users == ["prometheus"]
    listening = host.check_output("ss -Htln | awk '{print $4}'").split()
    assert [a for a in listening if a.endswith(":9100")] == ["127.0.0.1:9100"]


def test_supervisor_runs_it(host):
    status = host.check_output("supervisorctl status node-exporter")
    assert "RUNNING" in status
