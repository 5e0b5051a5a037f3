"""Verifiers for the celery_app role: the installed application, its environment and its
pool catalogue, on both hosts (the bundled app and the Django project's)."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

VENV = "/opt/worker-app/venv"


def test_environment_file_is_private_and_names_the_app(host, app_module):
    env = host.file("/etc/worker-app/worker.env")
    assert (env.user, env.group, env.mode) == ("root", "celery", 0o640)
    assert env.contains("^CELERY_BROKER_URL=")
    django = "django_project" in host.ansible.get_variables()["group_names"]
    assert app_module == ("proj" if django else "worker_app")


def test_the_catalogue_is_installed_and_named_in_the_environment(host, as_service_user):
    catalogue = host.file("/etc/worker-app/pools.yml")
    assert (catalogue.user, catalogue.group, catalogue.mode) == ("root", "celery", 0o640)
    assert host.file("/etc/worker-app/worker.env").contains(
        "^WORKER_APP_POOLS_FILE=/etc/worker-app/pools.yml$"
    )
    shown = json.loads(as_service_user(f"{VENV}/bin/worker-app pools --json").stdout)
    assert [pool["name"] for pool in shown["pools"]][-1] == "reports"


def test_the_cli_runs_the_app_of_the_environment(host, as_service_user):
    # worker-app loads the app WORKER_APP_CELERY_APP names (the project's: Django set up) and
    # reaches that app's workers.
    name = host.check_output("hostname")
    nodes = f"critical-0@{name} low-0@{name}"
    out = as_service_user(f"{VENV}/bin/worker-app node wait {nodes} --timeout 60")
    assert out.rc == 0, out.stdout + out.stderr
