"""One port and one Prometheus user for the console: worker-app's default port is the role's,
the playbooks' wiring's and the docker stack's; the user Prometheus scrapes it as is the same
in the wiring and the stack."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

from worker_app.cli.web import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[2]


def stack_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stack_config", ROOT / "docker" / "stack_config.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wiring() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "ansible" / "group_vars" / "all" / "wiring.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_role_the_wiring_and_the_stack_use_worker_apps_default_port() -> None:
    defaults = yaml.safe_load((ROOT / "roles" / "console" / "defaults" / "main.yml").read_text())
    assert defaults["console_port"] == DEFAULT_PORT
    assert wiring()["stack_console_port"] == DEFAULT_PORT
    assert f"console:{DEFAULT_PORT}" == stack_config().CONSOLE
    service = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["console"]
    # The container serves on the default port (its command gives none) and publishes it.
    assert "--port" not in " ".join(service["command"])
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == [str(DEFAULT_PORT)]
    assert all(p.startswith("127.0.0.1:") for p in service["ports"])
    assert f"127.0.0.1:{DEFAULT_PORT}/" in " ".join(service["healthcheck"]["test"])


def test_prometheus_scrapes_as_the_same_read_only_user_in_the_playbooks_and_the_stack() -> None:
    user = wiring()["stack_console_prometheus_user"]
    assert user == stack_config().CONSOLE_PROMETHEUS_USER
    start = (ROOT / "docker" / "console" / "start.sh").read_text()
    assert f'  {user}: {{password_hash: "$prometheus", role: read-only}}' in start
    jobs = wiring()["stack_scrape_jobs"]
    assert isinstance(jobs, list)
    (console,) = [job for job in jobs if job["name"] == "console"]
    assert console["basic_auth"]["username"] == "{{ stack_console_prometheus_user }}"
