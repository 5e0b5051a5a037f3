"""TLS settings (``WORKER_APP_REDIS_TLS_*``) and where ``configure`` puts them; the handshakes
themselves are in tests/integration/test_tls.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import kombu.transport
import pytest
import redis
from celery import Celery

from worker_app import configure
from worker_app.broker_transport import Transport, install
from worker_app.settings import Settings, SettingsError
from worker_app.state_redis import client_for
from worker_app.tls import TLSConfig, describe

TLS_VARIABLES = (
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "WORKER_APP_REDIS_URL",
    "WORKER_APP_POOLS_FILE",
    "WORKER_APP_REDIS_TLS_CA_FILE",
    "WORKER_APP_REDIS_TLS_CERT_FILE",
    "WORKER_APP_REDIS_TLS_KEY_FILE",
    "WORKER_APP_REDIS_TLS_CERT_REQS",
    "WORKER_APP_REDIS_TLS_CHECK_HOSTNAME",
)


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, ca_file: str) -> None:
    for name in TLS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKER_APP_REDIS_TLS_CA_FILE", ca_file)


def test_the_default_verifies_the_certificate_and_the_host_against_the_system_store() -> None:
    tls = Settings.from_env({}).tls
    assert tls == TLSConfig()
    assert tls.redis_kwargs() == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}


def test_files_and_switches_become_redis_py_arguments(ca_file: str) -> None:
    tls = Settings.from_env(
        {
            "WORKER_APP_REDIS_TLS_CA_FILE": ca_file,
            "WORKER_APP_REDIS_TLS_CERT_FILE": ca_file,
            "WORKER_APP_REDIS_TLS_KEY_FILE": ca_file,
            "WORKER_APP_REDIS_TLS_CHECK_HOSTNAME": "no",
        }
    ).tls
    assert tls.redis_kwargs() == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": False,
        "ssl_ca_certs": ca_file,
        "ssl_certfile": ca_file,
        "ssl_keyfile": ca_file,
    }
    unverified = Settings.from_env({"WORKER_APP_REDIS_TLS_CERT_REQS": "none"}).tls
    assert unverified.redis_kwargs() == {
        "ssl_cert_reqs": ssl.CERT_NONE,
        "ssl_check_hostname": False,
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_APP_REDIS_TLS_CERT_REQS": "optional"}, "must be one of required, none"),
        ({"WORKER_APP_REDIS_TLS_CA_FILE": "/nonexistent/ca.crt"}, "no readable file"),
        ({"WORKER_APP_REDIS_TLS_KEY_FILE": __file__}, "needs WORKER_APP_REDIS_TLS_CERT_FILE"),
        ({"WORKER_APP_REDIS_TLS_CHECK_HOSTNAME": "maybe"}, "must be yes or no"),
    ],
)
def test_unusable_tls_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


@pytest.mark.usefixtures("env")
def test_configure_verifies_a_rediss_broker_backend_and_redbeat(ca_file: str) -> None:
    app = configure(
        Celery("proj", set_as_current=False, broker="rediss://redis.internal:6380/0"),
        result_backend="rediss://redis.internal:6380/1",
    )
    expected = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    expected["ssl_ca_certs"] = ca_file
    assert app.conf.broker_use_ssl == expected
    assert app.conf.redis_backend_use_ssl == expected
    assert app.conf.redbeat_redis_use_ssl == expected
    with app.connection_for_write() as conn:
        assert conn.ssl == expected
        assert isinstance(conn.transport, Transport)


@pytest.mark.usefixtures("env")
def test_configure_leaves_plain_urls_and_the_apps_own_tls_options_alone() -> None:
    plain = configure(Celery("proj", set_as_current=False, broker="redis://10.0.0.9:6379/0"))
    assert not plain.conf.broker_use_ssl
    assert plain.conf.redbeat_redis_use_ssl is False  # never RedBeat's fallback on the broker's
    own = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/app/ca.pem"}
    app = Celery("proj", set_as_current=False, broker="rediss://redis.internal:6380/0")
    app.conf.broker_use_ssl = own
    assert configure(app).conf.broker_use_ssl == own


def test_rediss_urls_are_served_by_the_reliable_transport() -> None:
    install()
    assert kombu.transport.resolve_transport("rediss") is Transport
    assert kombu.transport.resolve_transport("redis") is Transport


def test_worker_app_clients_of_a_rediss_url_verify_as_configured(ca_file: str) -> None:
    tls = TLSConfig(ca_file=ca_file)
    client = client_for("rediss://redis.internal:6380/0", tls=tls)
    pool = client.connection_pool
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == ca_file
    assert pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert client_for("rediss://redis.internal:6380/0").connection_pool is not pool


def _verify_error(code: int, message: str) -> redis.ConnectionError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_code = code
    error.verify_message = message
    try:
        raise redis.ConnectionError("Error 1 connecting to redis.internal:6380.") from error
    except redis.ConnectionError as exc:
        return exc


def test_a_refusal_is_one_line_naming_the_host_and_the_cause(ca_file: str) -> None:
    url = "rediss://:secret@redis.internal:6380/0"
    tls = TLSConfig(ca_file=ca_file)
    line = describe(_verify_error(20, "unable to get local issuer certificate"), url, tls)
    assert line == (
        "TLS to Redis at redis.internal:6380 refused: the server's certificate is not signed by "
        f"a CA in the CA file {ca_file} (WORKER_APP_REDIS_TLS_CA_FILE) (unable to get local "
        "issuer certificate)"
    )
    mismatch = describe(_verify_error(62, "Hostname mismatch"), url, tls)
    assert mismatch is not None and "does not name the host 'redis.internal'" in mismatch
    expired = describe(_verify_error(10, "certificate has expired"), url, tls)
    assert expired is not None and "has expired" in expired
    assert describe(redis.ConnectionError("Connection refused."), url, tls) is None


@pytest.mark.usefixtures("env")
def test_turning_verification_off_is_explicit_and_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WORKER_APP_REDIS_TLS_CERT_REQS", "none")
    with caplog.at_level("WARNING", logger="worker_app.configure"):
        app = configure(Celery("proj", set_as_current=False, broker="rediss://r.internal:6380/0"))
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_NONE
    assert "WORKER_APP_REDIS_TLS_CERT_REQS=none" in caplog.text
