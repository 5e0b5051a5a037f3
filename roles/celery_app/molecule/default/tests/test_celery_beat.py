"""Verifiers for the celery_beat role: one scheduler of the host's app that really publishes
(Celery's file scheduler on the bundled app's host, django-celery-beat's DatabaseScheduler on
the Django project's)."""

import os
import re
import time

import testinfra.utils.ansible_runner

VENV = "/opt/worker-app/venv"

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")


def test_beat_runs_once_as_the_service_user(host, app_module):
    lines = host.check_output(f"ps -eo user:20,args | grep '[c]elery -A {app_module} beat'")
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


def test_schedule_is_persistent_and_private(host, app_module, as_service_user):
    directory = host.file("/var/lib/celery-beat")
    assert (directory.user, directory.mode) == ("celery", 0o750)
    if app_module == "proj":
        # DatabaseScheduler: the schedule (the app's beat_schedule included) is in the database.
        query = "PeriodicTask.objects.filter(name='trim-dead-letters').count()"
        out = as_service_user(
            f'{VENV}/bin/django-admin shell --verbosity 0 -c "from django_celery_beat.models '
            f'import PeriodicTask; print({query})"'
        )
        assert out.stdout.strip().splitlines()[-1:] == ["1"], out.stdout + out.stderr
        assert (
            "--scheduler django_celery_beat.schedulers:DatabaseScheduler"
            in host.file("/etc/supervisor/conf.d/celery-beat.conf").content_string
        )
    else:
        assert host.run("ls /var/lib/celery-beat/schedule*").rc == 0
