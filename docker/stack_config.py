"""The local stack's files that follow from the pool catalogue and the Redis role.

``docker/stack.sh`` runs this before every compose command; it writes into ``--out``:

- ``pools.yml``: the pool catalogue in effect (``WORKER_APP_POOLS_FILE``, else the one packaged
  with worker_app), checked by worker_app itself; every worker_app container reads it;
- ``compose.workers.yaml``: one ``worker-<pool>`` service per pool, each the ``x-worker``
  template of ``docker/compose.yaml`` with its pool's command and health check;
- ``prometheus.yml``: the stack's scrape configuration, the same jobs as the Prometheus role's
  (``ansible/group_vars/all/wiring.yml``; tests/roles compares them), one target per worker
  service;
- ``redis-acl-rules``: the ACL users of ``roles/redis/defaults/main.yml`` (name, the variable
  holding the password, rules), which the Redis image's entrypoint turns into its ACL file.

A bad catalogue stops it with one line naming the pool and the field (exit 2), before any
container changes.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from worker_app.cli.web import DEFAULT_PORT as CONSOLE_PORT
from worker_app.factory import load_and_check
from worker_app.pools import Catalogue
from worker_app.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
# Where the containers find the catalogue (mounted read-only from --out).
CATALOGUE_IN_CONTAINERS = "/etc/worker-app/pools.yml"
# The stack's own services and ports; the roles' defaults are the same (tests/roles checks it).
EXPORTER = "exporter:9808"
REDIS_EXPORTER = "redis-exporter:9121"
FLOWER = "flower:5555"
CONSOLE = f"console:{CONSOLE_PORT}"
# Prometheus scrapes the console's /metrics as this read-only console user (the wiring's
# stack_console_prometheus_user); its password file is written when the container starts.
CONSOLE_PROMETHEUS_USER = "prometheus"
# Inside the Prometheus container (its own /tmp), written with umask 077 by its command.
CONSOLE_PASSWORD_FILE = "/tmp/console.password"  # noqa: S105, S108 - a path in the container
ALERTMANAGER = "alertmanager:9093"
# The worker nodes' and the broker exporter's series share job="celery" (as one celery-exporter's
# do); `component` tells them apart. The same labels as the role's wiring.yml (tests/roles).
CELERY_WORKER_LABELS = {"job": "celery", "component": "worker"}
CELERY_EXPORTER_LABELS = {"job": "celery", "component": "exporter"}


def worker_service_name(pool: str) -> str:
    """The compose service (and host name) of a pool's worker."""
    return f"worker-{pool}"


def local_concurrency(pool: Any) -> int:
    """Processes per worker on one development machine: half the pool's, at least one."""
    return max(1, (pool.concurrency or pool.autoscale.max) // 2)


def worker_services(catalogue: Catalogue, compose: dict[str, Any]) -> dict[str, Any]:
    """One service per pool, from compose.yaml's ``x-worker`` template."""
    template = compose["x-worker"]
    services = {}
    for pool in catalogue.pools:
        name = worker_service_name(pool.name)
        service = copy.deepcopy(template)
        service["hostname"] = name
        service["command"] = [
            "worker-app", "worker", "--pool", pool.name,
            "--concurrency", str(local_concurrency(pool)),
        ]  # fmt: skip
        service["healthcheck"] = {
            **template["healthcheck"],
            "test": ["CMD", "celery", "-A", "worker_app", "inspect", "ping",
                     "-d", f"{pool.name}@{name}", "-t", "10"],
        }  # fmt: skip
        services[name] = service
    return {"services": services}


def prometheus_config(catalogue: Catalogue) -> dict[str, Any]:
    """The stack's Prometheus configuration: our rules, the Alertmanager, every service."""

    def job(name: str, target: str, **labels: str) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [target], "labels": labels}]}

    workers = [
        {
            "targets": [f"{worker_service_name(pool.name)}:{pool.metrics_port}"],
            "labels": {
                **CELERY_WORKER_LABELS,
                "pool": pool.name,
                "host": worker_service_name(pool.name),
            },
        }
        for pool in catalogue.pools
    ]
    return {
        "global": {"scrape_interval": "10s", "evaluation_interval": "10s"},
        "rule_files": ["/etc/prometheus/rules/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [ALERTMANAGER]}]}]},
        "scrape_configs": [
            # Two scrape pools, one job label (as the Prometheus role's wiring.yml).
            {"job_name": "celery-workers", "static_configs": workers},
            job("celery-exporter", EXPORTER, **CELERY_EXPORTER_LABELS),
            job("flower", FLOWER, host="flower"),
            {
                **job("console", CONSOLE, host="console"),
                "basic_auth": {
                    "username": CONSOLE_PROMETHEUS_USER,
                    "password_file": CONSOLE_PASSWORD_FILE,
                },
            },
            job("redis", REDIS_EXPORTER, host="redis"),
            job("prometheus", "127.0.0.1:9090", host="prometheus"),
            job("alertmanager", ALERTMANAGER, host="alertmanager"),
        ],
    }


def redis_acl_rules() -> str:
    """``<user> <password variable> <rules>`` lines, from the Redis role's defaults."""
    defaults = yaml.safe_load((ROOT / "roles" / "redis" / "defaults" / "main.yml").read_text())
    lines = ["# From roles/redis/defaults/main.yml by docker/stack_config.py: do not edit."]
    for which in ("celery", "exporter"):
        user = defaults[f"redis_{which}_user"]
        rules = " ".join(str(defaults[f"redis_{which}_acl"]).split())
        lines.append(f"{user} REDIS_{which.upper()}_PASSWORD {rules}")
    return "\n".join(lines) + "\n"


def write(out: Path, catalogue: Catalogue) -> None:
    """Write every generated file into ``out``."""
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    out.mkdir(parents=True, exist_ok=True)
    header = "# Generated by docker/stack_config.py from the pool catalogue: do not edit.\n"
    files = {
        "pools.yml": header + yaml.safe_dump(catalogue.as_dict(), sort_keys=False),
        "compose.workers.yaml": header + yaml.safe_dump(worker_services(catalogue, compose)),
        "prometheus.yml": header + yaml.safe_dump(prometheus_config(catalogue), sort_keys=False),
        "redis-acl-rules": redis_acl_rules(),
    }
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        path.chmod(0o644)  # read by the containers' service users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Directory to write into.")
    args = parser.parse_args(argv)
    try:
        # The containers' settings: the default visibility timeout and no time-limit cap.
        settings = Settings(pools_file=os.environ.get("WORKER_APP_POOLS_FILE") or None)
        catalogue = load_and_check(settings)
    except SettingsError as exc:
        print(f"make up: the pool catalogue cannot be used: {exc}", file=sys.stderr)
        return 2
    write(args.out, catalogue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
