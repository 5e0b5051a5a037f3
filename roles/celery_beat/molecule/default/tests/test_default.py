"""Verifiers for the celery_beat role: one scheduler that really publishes."""

import json
import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

AUTH = "--user celery --pass molecule-celery-secret-0001 --no-auth-warning"


def test_beat_runs_once_as_the_service_user(host):
    lines = host.check_output("ps -eo user:20,args | grep '[c]elery -A worker_app beat'")
    rows = [line for line in lines.splitlines() if "/bin/sh" not in line]
    assert len(rows) == 1
    assert rows[0].split()[0] == "celery"


def test_a_scheduled_task_is_published(host):
    # Nothing consumes `low` here: the messages Beat publishes stay in the list.
    messages = []
    for _ in range(30):
        raw = host.run(f"redis-cli -h 127.0.0.1 {AUTH} lrange low 0 -1").stdout.strip()
        messages = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
        if len(messages) >= 2:
            break
        time.sleep(1)
    assert len(messages) >= 2, "Beat published fewer than two runs"
    assert {m["headers"]["task"] for m in messages} == {"worker_app.maintenance.trim_dlq"}


def test_schedule_is_persistent_and_private(host):
    directory = host.file("/var/lib/celery-beat")
    assert (directory.user, directory.mode) == ("celery", 0o750)
    assert host.run("ls /var/lib/celery-beat/schedule*").rc == 0
