"""Your own Celery app on the hosts (celery_app_module, the project's wheel, Django settings),
through the roles and the playbooks' wiring, with real ansible-playbook runs on the controller
(check mode, nothing changed): a Django project's values pass every preflight, the environment
file names the app for the worker-app CLI, Beat (on the DatabaseScheduler) and Flower run
`celery -A` with it, the wiring installs the inventory's `app_packages`; and the one-Beat rule
still holds for django-celery-beat, which does not lock.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.roles.test_playbook_preflight import SECRETS, staging_copy
from tests.roles.test_pool_wiring import evaluate
from tests.roles.test_role_inputs import fake_wheelhouse
from tests.support.ansible_output import failure_message, recap

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATABASE_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# What an inventory sets for a Django project (the molecule scenario deploys the same).
DJANGO: dict[str, Any] = {
    "celery_app_module": "proj",
    "celery_app_extra_packages": ["flower", "example-django-project"],
    "celery_app_environment": {
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "DJANGO_SECRET_KEY": "a-django-secret-key-for-tests",
        "DJANGO_DB_HOST": "10.0.0.20",
    },
    "celery_app_broker_url": "redis://celery:secret@10.0.0.5:6379/0",
    "celery_beat_scheduler": DATABASE_SCHEDULER,
    "flower_basic_auth_password": "long-enough-secret",
}


def playbook(
    tmp_path: Path, tasks: list[dict[str, Any]], variables: dict[str, Any], hosts: int = 1
) -> tuple[int, str]:
    """``tasks`` on ``hosts`` local hosts (all in the group `beat`), in check mode with diffs."""
    python = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = tmp_path / "hosts.yml"
    names = {f"host-{n}": python for n in range(1, hosts + 1)}
    inventory.write_text(yaml.safe_dump({"beat": {"hosts": names}}))
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "app", "hosts": "beat", "gather_facts": False,
                                     "tasks": tasks}]))  # fmt: skip
    extra = tmp_path / "vars.yml"
    extra.write_text(yaml.safe_dump(variables))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0"}  # fmt: skip
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--check", "--diff", "-i", str(inventory),
         "-e", f"@{extra}", str(play)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def preflights(*roles: str) -> list[dict[str, Any]]:
    return [
        {"name": f"{role} preflight",
         "ansible.builtin.include_role": {"name": role, "tasks_from": "preflight"}}
        for role in roles
    ]  # fmt: skip


def test_a_django_project_passes_the_preflights(tmp_path: Path) -> None:
    wheelhouse = fake_wheelhouse(tmp_path, "example_django_project-0.1.0-py3-none-any.whl")
    variables = {**DJANGO, "celery_app_wheelhouse_src": str(wheelhouse)}
    rc, output = playbook(tmp_path, preflights("celery_app", "celery_beat", "flower"), variables)
    assert rc == 0, output
    assert recap(output) == {"host-1": {"changed": 0, "failed": 0, "unreachable": 0}}, output


@pytest.mark.parametrize("module", ["proj", "proj.celery", "proj.celery:app", "worker_app"])
def test_the_environment_file_names_the_app(tmp_path: Path, module: str) -> None:
    role = ROOT / "roles" / "celery_app"
    template = role / "templates" / "app.env.j2"
    show = {"name": "render", "ansible.builtin.debug": {
        "msg": f"{{{{ lookup('ansible.builtin.template', '{template}') }}}}"}}  # fmt: skip
    # The role's defaults and its own derived names (the template reads both).
    defaults = {
        **yaml.safe_load((role / "defaults" / "main.yml").read_text()),
        **yaml.safe_load((role / "vars" / "main.yml").read_text()),
    }
    rc, output = playbook(tmp_path, [show], {**defaults, **DJANGO, "celery_app_module": module})
    assert rc == 0, output
    rendered = output.replace("\\n", "\n")
    assert re.search(rf"^WORKER_APP_CELERY_APP={re.escape(module)}$", rendered, re.M), output
    assert re.search(r"^DJANGO_SETTINGS_MODULE=proj.settings$", rendered, re.M), output


def test_beat_and_flower_run_the_app_of_celery_app(tmp_path: Path) -> None:
    # The whole roles in check mode: the supervisor programs they would write, as diffs.
    variables = {
        **DJANGO,
        "celery_app_module": "proj.celery:app",
        "celery_app_venv": "/opt/worker-app/venv",
        "celery_app_env_file": "/etc/worker-app/worker.env",
        "celery_app_user": "celery",
        "celery_app_group": "celery",
        "celery_app_home": "/opt/worker-app",
        "celery_app_log_dir": "/var/log/worker-app",
        "celery_beat_schedule_dir": str(tmp_path / "beat"),
        "supervisor_include_dir": str(tmp_path / "conf.d"),
        "flower_db_dir": str(tmp_path / "flower"),
        "flower_auth_env_file": str(tmp_path / "flower.env"),
    }
    roles = [{"name": role, "ansible.builtin.include_role": {"name": role}}
             for role in ("celery_beat", "flower")]  # fmt: skip
    rc, output = playbook(tmp_path, roles, variables)
    assert rc == 0, output
    commands = re.findall(r"^\+command=(.*)$", output, re.M)
    assert len(commands) == 2, output
    beat, flower = commands
    assert (
        "/opt/worker-app/venv/bin/celery -A proj.celery:app beat" in beat
        and f"--scheduler {DATABASE_SCHEDULER}'" in beat
    ), beat
    assert "/opt/worker-app/venv/bin/celery -A proj.celery:app flower" in flower, flower
    assert not (tmp_path / "conf.d").exists()  # check mode


@pytest.mark.bad_input
def test_two_beat_hosts_on_the_database_scheduler_stop_the_play(tmp_path: Path) -> None:
    # django-celery-beat does not lock: two DatabaseScheduler Beats publish every task twice.
    rc, output = playbook(tmp_path, preflights("celery_beat"), DJANGO, hosts=2)
    assert rc != 0, output
    assert "The beat group has 2 hosts (host-1, host-2)" in failure_message(output), output
    assert all(host["changed"] == 0 for host in recap(output).values()), output


def test_two_beat_hosts_on_a_locking_scheduler_pass(tmp_path: Path) -> None:
    variables = {**DJANGO, "celery_beat_scheduler": "redbeat.RedBeatScheduler"}
    rc, output = playbook(tmp_path, preflights("celery_beat"), variables, hosts=2)
    assert rc == 0, output


def test_the_wiring_installs_the_inventorys_app_packages(tmp_path: Path) -> None:
    inventory = staging_copy(tmp_path, SECRETS)
    main = inventory / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text() + "celery_app_module: proj\n"
                    "app_packages: [example-django-project]\n")  # fmt: skip
    packages = evaluate(inventory, "{{ celery_app_extra_packages }}")
    assert packages == {
        "stg-broker-1": ["example-django-project", "flower"],  # the Flower host
        "stg-worker-1": ["example-django-project"],
        "stg-worker-2": ["example-django-project"],
    }
    assert set(evaluate(inventory, "{{ celery_app_module }}").values()) == {"proj"}
    # Without app_packages: what the bundled app needs, as before.
    plain = staging_copy(tmp_path / "plain", SECRETS)
    assert evaluate(plain, "{{ celery_app_extra_packages }}") == {
        "stg-broker-1": ["flower"], "stg-worker-1": [], "stg-worker-2": []}  # fmt: skip
