"""Redis Sentinel settings: kombu's ``sentinel://`` URL list, the master name and the
Sentinels' credentials (``WORKER_APP_SENTINEL_*``) as configure() hands them to kombu and to
worker_app's own clients, and the publish durability settings. (The failover itself, on real
processes: tests/integration/test_sentinel.py.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import kombu.transport
import pytest
from celery import Celery

from worker_app import configure, settings_of
from worker_app.broker_transport import (
    ReliableChannel,
    ReliableSentinelChannel,
    SentinelTransport,
    install,
)
from worker_app.sentinel import SentinelConfig, SentinelURL, is_sentinel_url
from worker_app.settings import Settings, SettingsError
from worker_app.state_redis import client_for

URL = (
    "sentinel://celery:s%40cret@10.0.0.1:26379/2;sentinel://celery:s%40cret@10.0.0.2:26380/2;"
    "sentinel://celery:s%40cret@10.0.0.3/2"
)
ENV_NAMES = (
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "WORKER_APP_REDIS_URL",
    "WORKER_APP_SENTINEL_MASTER",
    "WORKER_APP_SENTINEL_USERNAME",
    "WORKER_APP_SENTINEL_PASSWORD",
    "WORKER_APP_PUBLISH_MIN_REPLICAS",
    "WORKER_APP_PUBLISH_REPLICA_TIMEOUT_MS",
    "WORKER_APP_SENTINEL_TLS",
    "WORKER_APP_REDIS_TLS_CA_FILE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_the_url_list_names_every_sentinel_and_the_data_nodes_credentials() -> None:
    parsed = SentinelURL.parse(URL)
    assert parsed.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (parsed.username, parsed.password, parsed.db) == ("celery", "s@cret", 2)
    assert is_sentinel_url(URL)
    assert not is_sentinel_url("redis://10.0.0.1:6379/0")


def test_a_sentinel_url_without_a_master_name_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", URL)
    with pytest.raises(SettingsError, match="WORKER_APP_SENTINEL_MASTER"):
        configure(Celery("proj", set_as_current=False))
    with pytest.raises(SettingsError, match="WORKER_APP_SENTINEL_MASTER"):
        client_for(URL)


def test_a_master_name_in_the_apps_transport_options_is_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", URL)
    app = Celery("proj", set_as_current=False)
    app.conf.broker_transport_options = {"master_name": "mine"}
    configure(app)
    assert app.conf.broker_transport_options["master_name"] == "mine"
    assert settings_of(app).sentinel == SentinelConfig("mine")


def test_configure_hands_the_master_and_sentinel_credentials_to_kombu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", URL)
    monkeypatch.setenv("WORKER_APP_SENTINEL_MASTER", "celery-master")
    monkeypatch.setenv("WORKER_APP_SENTINEL_USERNAME", "sentinel-user")
    monkeypatch.setenv("WORKER_APP_SENTINEL_PASSWORD", "sentinel-pass")
    options = configure(Celery("proj", set_as_current=False)).conf.broker_transport_options
    assert options["master_name"] == "celery-master"
    kwargs = dict(options["sentinel_kwargs"])
    assert kwargs.pop("retry").get_retries() == 0  # one attempt per Sentinel
    assert kwargs == {"username": "sentinel-user", "password": "sentinel-pass"}
    assert "publish_min_replicas" not in options  # off by default

    # The user's own values stay.
    app = Celery("proj", set_as_current=False)
    app.conf.broker_transport_options = {"master_name": "theirs", "sentinel_kwargs": {}}
    options = configure(app).conf.broker_transport_options
    assert options["master_name"] == "theirs"
    assert options["sentinel_kwargs"] == {}


def test_a_redis_url_gets_no_sentinel_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://10.0.0.1:6379/0")
    monkeypatch.setenv("WORKER_APP_SENTINEL_MASTER", "celery-master")
    options = configure(Celery("proj", set_as_current=False)).conf.broker_transport_options
    assert "master_name" not in options
    assert "sentinel_kwargs" not in options


def test_publish_durability_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({}).publish_min_replicas == 0
    assert Settings.from_env({}).publish_replica_timeout_ms == 1000
    with pytest.raises(SettingsError, match="WORKER_APP_PUBLISH_MIN_REPLICAS"):
        Settings.from_env({"WORKER_APP_PUBLISH_MIN_REPLICAS": "one"})
    with pytest.raises(SettingsError, match="WORKER_APP_PUBLISH_REPLICA_TIMEOUT_MS"):
        Settings.from_env({"WORKER_APP_PUBLISH_REPLICA_TIMEOUT_MS": "0"})
    monkeypatch.setenv("WORKER_APP_PUBLISH_MIN_REPLICAS", "1")
    monkeypatch.setenv("WORKER_APP_PUBLISH_REPLICA_TIMEOUT_MS", "250")
    options = configure(Celery("proj", set_as_current=False)).conf.broker_transport_options
    assert (options["publish_min_replicas"], options["publish_replica_timeout"]) == (1, 250)


def test_install_serves_sentinel_urls_with_the_reliable_transport() -> None:
    install()
    assert kombu.transport.resolve_transport("sentinel") is SentinelTransport
    assert issubclass(ReliableSentinelChannel, ReliableChannel)
    options = set(ReliableSentinelChannel.from_transport_options)
    assert {"master_name", "sentinel_kwargs", "inflight_grace", "publish_min_replicas"} <= options


def test_a_sentinel_result_backend_gets_the_master_name_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", URL)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", URL.replace("/2", "/3"))
    monkeypatch.setenv("WORKER_APP_SENTINEL_MASTER", "celery-master")
    monkeypatch.setenv("WORKER_APP_SENTINEL_PASSWORD", "sentinel-pass")
    conf = configure(Celery("proj", set_as_current=False)).conf
    options = dict(conf.result_backend_transport_options)
    kwargs = dict(options.pop("sentinel_kwargs"))
    assert kwargs.pop("retry").get_retries() == 0
    assert (options, kwargs) == ({"master_name": "celery-master"}, {"password": "sentinel-pass"})


def test_redbeat_options_name_the_sentinels_the_master_and_both_credentials() -> None:
    from worker_app.sentinel import redbeat_options  # noqa: PLC0415

    url, options = redbeat_options(URL, SentinelConfig("celery-master", "admin", "pw"))
    assert url == "redis-sentinel://"
    assert options["sentinels"] == [["10.0.0.1", 26379], ["10.0.0.2", 26380], ["10.0.0.3", 26379]]
    assert (options["service_name"], options["db"]) == ("celery-master", 2)
    assert (options["username"], options["password"]) == ("celery", "s@cret")
    kwargs = dict(options["sentinel_kwargs"])
    assert kwargs.pop("retry").get_retries() == 0
    assert kwargs == {
        "socket_timeout": 10,
        "username": "admin",
        "password": "pw",
    }


def test_sentinel_tls_puts_every_sentinel_client_on_tls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``WORKER_APP_SENTINEL_TLS=yes``: kombu's data-node connections (``broker_use_ssl``), the
    Sentinels' (``sentinel_kwargs``), Celery's Sentinel result backend, RedBeat's and
    worker_app's own clients all get the verified TLS of ``WORKER_APP_REDIS_TLS_*``; without
    it, none does."""
    ca = tmp_path / "ca.crt"
    ca.write_text("not read here")
    monkeypatch.setenv("CELERY_BROKER_URL", URL)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", URL.replace("/2", "/3"))
    monkeypatch.setenv("WORKER_APP_SENTINEL_MASTER", "celery-master")
    monkeypatch.setenv("WORKER_APP_REDIS_TLS_CA_FILE", str(ca))
    plain = Celery("proj", set_as_current=False)
    configure(plain)
    assert not plain.conf.broker_use_ssl
    assert "ssl" not in plain.conf.broker_transport_options["sentinel_kwargs"]
    assert plain.conf.redbeat_redis_use_ssl is False

    monkeypatch.setenv("WORKER_APP_SENTINEL_TLS", "yes")
    app = Celery("proj", set_as_current=False)
    configure(app)
    verified = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True,
                "ssl_ca_certs": str(ca)}  # fmt: skip
    assert app.conf.broker_use_ssl == verified
    assert app.conf.redis_backend_use_ssl == verified
    for options in (app.conf.broker_transport_options, app.conf.result_backend_transport_options):
        assert dict(options["sentinel_kwargs"]) | {"retry": None} == {
            "ssl": True, **verified, "retry": None,
        }  # fmt: skip
    assert app.conf.redbeat_redis_use_ssl == verified
    assert app.conf.redbeat_redis_options["sentinel_kwargs"]["ssl"] is True
    config = settings_of(app).sentinel
    assert config is not None
    assert config.data_kwargs() == {"ssl": True, **verified}

    monkeypatch.setenv("WORKER_APP_SENTINEL_TLS", "maybe")
    with pytest.raises(SettingsError, match="WORKER_APP_SENTINEL_TLS must be yes or no"):
        configure(Celery("proj", set_as_current=False))
