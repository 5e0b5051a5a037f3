"""Verifiers for the celery_beat role: one scheduler that really publishes."""

import os
import re
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")


def test_beat_runs_once_as_the_service_user(host):
    lines = host.check_output("ps -eo user:20,args | grep '[c]elery -A worker_app beat'")
    rows = [line for line in lines.splitlines() if "/bin/sh" not in line]
    assert len(rows) == 1
    assert rows[0].split()[0] == "celery"


def received(host):
    """Housekeeping runs the `low` worker (the catalogue's maintenance queue) received."""
    body = host.run("curl -fsS http://127.0.0.1:9815/metrics").stdout
    pattern = (
        r'^celery_task_received_total\{[^}]*name="worker_app\.maintenance\.trim_dlq"[^}]*\} (\S+)$'
    )
    return sum(float(value) for value in re.findall(pattern, body, re.MULTILINE))


def test_a_scheduled_task_is_published_and_run(host):
    # Beat publishes every 3 s to the maintenance queue (`low`), whose pool runs it.
    first = received(host)
    for _ in range(30):
        if received(host) >= first + 2:
            break
        time.sleep(1)
    assert received(host) >= first + 2, "Beat published fewer than two runs in 30 s"


def test_schedule_is_persistent_and_private(host):
    directory = host.file("/var/lib/celery-beat")
    assert (directory.user, directory.mode) == ("celery", 0o750)
    assert host.run("ls /var/lib/celery-beat/schedule*").rc == 0
