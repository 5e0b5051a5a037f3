"""Fixtures for the rehearsal checks: the inventory as Ansible sees it, and clients to it.

Run by ``tools/rehearse.sh ENV verify`` after the converge, which sets REHEARSAL_ENV,
REHEARSAL_INVENTORY and REHEARSAL_CONNECTION and STACK_VAULT_PASSWORD.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class Rehearsal:
    """The rehearsed environment: hosts, groups, secrets, and helpers to reach its services."""

    def __init__(self, env_name: str, inventory: str, connection: str) -> None:
        self.env_name = env_name
        self.inventory = inventory
        self.connection = connection
        self.ansible_env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        }

    @cached_property
    def data(self) -> dict[str, Any]:
        out = subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", self.inventory, "--list", *self.vault_args],
            capture_output=True, text=True, env=self.ansible_env, check=True, timeout=120,
        )  # fmt: skip
        return dict(json.loads(out.stdout))

    @property
    def vault_args(self) -> list[str]:
        return ["--vault-password-file", str(ROOT / "tools" / "vault-password-from-env.sh")]

    def group(self, name: str) -> list[str]:
        """The hosts of group ``name``, its child groups' included."""
        entry = self.data.get(name, {})
        hosts = set(entry.get("hosts", []))
        for child in entry.get("children", []):
            hosts.update(self.group(child))
        return sorted(hosts)

    def hostvars(self, host: str) -> dict[str, Any]:
        return dict(self.data["_meta"]["hostvars"][host])

    def address(self, host: str) -> str:
        return str(self.hostvars(host)["private_address"])

    def secret(self, name: str) -> str:
        return str(self.hostvars(self.group("redis")[0])[name])

    @property
    def broker_url(self) -> str:
        """The broker URL the hosts use (the wiring's ``celery_app_broker_url``): one Redis, or
        the Sentinels' list behind which the primary may move."""
        return str(self.wiring["celery_app_broker_url"])

    def redis(self) -> redis.Redis:
        """A client of the broker's Redis (the current primary behind Sentinel)."""
        from worker_app.settings import Settings  # noqa: PLC0415
        from worker_app.state_redis import broker_client  # noqa: PLC0415

        return broker_client(Settings.from_env(self.client_env()))

    def http(
        self, url: str, auth: tuple[str, str] | None = None, timeout: float = 10
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(url)  # noqa: S310 - http to the rehearsal hosts only
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def prometheus(self, path: str) -> Any:
        status, body = self.http(f"http://{self.address(self.group('monitoring')[0])}:9090{path}")
        assert status == 200, body
        return json.loads(body)["data"]

    def playbook(self, playbook: str, *args: str, timeout: float = 1800) -> tuple[int, str]:
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", self.inventory, "-i", self.connection,
             *self.vault_args, "-e", '{"stack_rehearsal": true, "grafana_install": false}',
             str(ROOT / "ansible" / playbook), *args],
            capture_output=True, text=True, env=self.ansible_env, timeout=timeout, check=False,
        )  # fmt: skip
        return proc.returncode, proc.stdout + proc.stderr

    def client_env(self) -> dict[str, str]:
        """The environment of a producer/CLI on the controller talking to the rehearsal broker."""
        return {
            **os.environ,
            **{str(k): str(v) for k, v in self.wiring["celery_app_broker_environment"].items()},
            "CELERY_BROKER_URL": self.broker_url,
            "WORKER_APP_TASK_MODULES": "worker_app.examples",
            **self.tls_env,
        }

    @cached_property
    def tls_env(self) -> dict[str, str]:
        """With TLS (stack_redis_tls): the environment's CA, and a client certificate of it (a
        Redis host's: every certificate of the CA serves as one), as files on the controller."""
        if str(self.wiring["stack_redis_tls_enabled"]).lower() not in ("true", "yes", "1"):
            return {}
        directory = Path(tempfile.mkdtemp(prefix="rehearsal-tls-"))
        pair = self.hostvars(self.group("redis")[0])["vault_tls_certs"][self.group("redis")[0]]
        files = {
            "WORKER_APP_REDIS_TLS_CA_FILE": ("ca.crt", self.secret("vault_tls_ca_cert")),
            "WORKER_APP_REDIS_TLS_CERT_FILE": ("client.crt", pair["cert"]),
            "WORKER_APP_REDIS_TLS_KEY_FILE": ("client.key", pair["key"]),
        }
        for name, text in files.values():
            (directory / name).write_text(text.strip() + "\n")
            (directory / name).chmod(0o600)
        return {variable: str(directory / name) for variable, (name, _) in files.items()}

    @property
    def pools(self) -> list[dict[str, Any]]:
        """The pools of the catalogue in effect, as the wiring reads it for this inventory."""
        return list(self.wiring["stack_worker_pools"])

    @cached_property
    def wiring(self) -> dict[str, Any]:
        """What ansible/group_vars wires for a worker host: the pools and the broker's client
        settings, as Ansible evaluates them for this inventory."""
        host = self.group("workers")[0]
        names = [
            "stack_worker_pools",
            "celery_app_broker_url",
            "celery_app_broker_environment",
            "stack_redis_tls_enabled",
        ]
        template = "{{ dict(_names | zip(query('ansible.builtin.vars', *_names))) }}"
        out = subprocess.run(
            [str(BIN / "ansible"), "-i", self.inventory, *self.vault_args,
             "--playbook-dir", str(ROOT / "ansible"), "-e", json.dumps({"_names": names}),
             "-m", "ansible.builtin.debug", "-a", json.dumps({"msg": template}), host],
            capture_output=True, text=True, timeout=120, check=True,
            env={**self.ansible_env, "ANSIBLE_STDOUT_CALLBACK": "json",
                 "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
        )  # fmt: skip
        return dict(json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"][host]["msg"])


@pytest.fixture(scope="session")
def rehearsal() -> Rehearsal:
    missing = [
        name
        for name in ("REHEARSAL_ENV", "REHEARSAL_INVENTORY", "REHEARSAL_CONNECTION",
                     "STACK_VAULT_PASSWORD")
        if not os.environ.get(name)
    ]  # fmt: skip
    if missing:
        pytest.fail(f"run through tools/rehearse.sh ENV verify (missing {', '.join(missing)})")
    return Rehearsal(
        os.environ["REHEARSAL_ENV"],
        os.environ["REHEARSAL_INVENTORY"],
        os.environ["REHEARSAL_CONNECTION"],
    )


@pytest.fixture(scope="session")
def client_app(rehearsal: Rehearsal) -> Any:
    """A producer app on the controller, publishing to the rehearsal broker."""
    from worker_app.factory import create_app  # noqa: PLC0415
    from worker_app.settings import Settings  # noqa: PLC0415

    return create_app(Settings.from_env(rehearsal.client_env()))
