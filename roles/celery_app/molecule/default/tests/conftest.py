"""What the Celery host's verifiers share: the app each host runs and how its processes see
the host (the service user with the application's environment)."""

import re
import shlex

import pytest

ENV_FILE = "/etc/worker-app/worker.env"
HOME = "/opt/worker-app"


@pytest.fixture
def app_module(host):
    """The Celery app the host's processes run (celery_app_module), as the environment file
    names it: `proj` on the Django project's host, `worker_app` on the other."""
    found = re.search(
        r"^WORKER_APP_CELERY_APP=(\S+)$", host.file(ENV_FILE).content_string, re.MULTILINE
    )
    assert found, f"{ENV_FILE} names no app"
    return found.group(1).strip("'")


@pytest.fixture
def as_service_user(host):
    """Run a shell command as `celery` with the application's environment, the way the
    processes run (the Django project's SQLite file belongs to that user)."""

    def run(command):
        script = f"set -a && . {ENV_FILE} && set +a && cd {HOME} && {command}"
        return host.run(f"runuser -u celery -- /bin/sh -c {shlex.quote(script)}")

    return run
