"""The client side of Sentinel as the playbooks wire it: what every Celery host's environment
says (ansible/group_vars/all/wiring.yml, evaluated by Ansible on the real inventories) is what
worker_app reads to find the primary through the Sentinels."""

from __future__ import annotations

import ssl
from pathlib import Path

import yaml

from tests.roles.test_playbook_preflight import (
    SECRETS,
    SENTINEL_SECRETS,
    production_copy,
    staging_copy,
)
from tests.roles.test_pool_wiring import evaluate
from worker_app.sentinel import SentinelURL
from worker_app.settings import Settings

EXPRESSION = "{{ {'url': celery_app_broker_url, 'env': celery_app_broker_environment} }}"


def test_production_clients_find_the_primary_through_every_sentinel(tmp_path: Path) -> None:
    inventory = production_copy(tmp_path, {**SECRETS, **SENTINEL_SECRETS})
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]
    redis_hosts = list(hosts["children"]["redis"]["hosts"])
    addresses = [hosts["hosts"][host]["private_address"] for host in redis_hosts]
    assert len(addresses) == 3
    seen = evaluate(inventory, EXPRESSION)
    wiring = seen["prd-worker-1"]
    assert all(other == wiring for other in seen.values())  # one broker for every host
    parsed = SentinelURL.parse(wiring["url"])
    assert parsed.sentinels == tuple((address, 26379) for address in addresses)
    assert (parsed.username, parsed.password, parsed.db) == (
        "celery", SECRETS["vault_redis_celery_password"], 0
    )  # fmt: skip
    settings = Settings.from_env({"CELERY_BROKER_URL": wiring["url"], **wiring["env"]})
    sentinel = settings.sentinel
    assert sentinel is not None
    assert sentinel.master == "celery"
    # Both inventories run on TLS (stack_redis_tls): the Sentinels too, verified by the CA.
    assert wiring["env"]["WORKER_APP_SENTINEL_TLS"] == "yes"
    kwargs = sentinel.sentinel_kwargs()
    assert kwargs["username"] == "sentinel-client"
    assert kwargs["password"] == SENTINEL_SECRETS["vault_redis_sentinel_client_password"]
    assert kwargs["ssl"] is True and kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["ssl_check_hostname"] is True


def test_staging_clients_talk_to_its_one_redis(tmp_path: Path) -> None:
    seen = evaluate(staging_copy(tmp_path, SECRETS), EXPRESSION)
    wiring = seen["stg-worker-1"]
    assert wiring["url"].startswith("rediss://celery:")  # TLS (stack_redis_tls)
    assert wiring["url"].endswith("@10.231.10.11:6379/0")
    assert wiring["env"] == {}
