"""A Sentinel that is down costs a master lookup one connection attempt, not redis-py's
default retries (10, with backoff, since redis-py 6). In the `host` chaos failover the workers
looked the master up again on every reconnect and spent about 3.5 s on the stopped Sentinel
each time; with a host that is gone (no RST) it would be 10 connect timeouts.

The Sentinels here are real TCP listeners that drop every connection they accept (a Sentinel
whose process is going away), counting the attempts: the lookup through worker_app's own
client, through kombu (the broker's transport options) and through RedBeat's options must
try each exactly once before it gives up."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError
from redis.sentinel import MasterNotFoundError, Sentinel

from worker_app.broker_transport import install
from worker_app.configuration import transport_options
from worker_app.sentinel import SentinelConfig, master_client, redbeat_options
from worker_app.settings import Settings

SECRET = "sentinel-pw"  # noqa: S105 - test credentials
MASKED = "********"


class DroppingListener:
    """A TCP listener on 127.0.0.1 that accepts and closes every connection, counting them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dead_sentinels() -> Iterator[list[DroppingListener]]:
    listeners = [DroppingListener(), DroppingListener()]
    yield listeners
    for listener in listeners:
        listener.close()


def url_of(listeners: list[DroppingListener]) -> str:
    return ";".join(f"sentinel://celery:pw@127.0.0.1:{s.port}/0" for s in listeners)


CONFIG = SentinelConfig("celery-master", "sentinel-user", "sentinel-pass")


def test_worker_app_clients_try_each_dead_sentinel_once(
    dead_sentinels: list[DroppingListener],
) -> None:
    client = master_client(url_of(dead_sentinels), CONFIG, socket_timeout=2)
    with pytest.raises(MasterNotFoundError):
        client.ping()
    assert [s.accepted for s in dead_sentinels] == [1, 1]


def test_kombu_with_the_broker_options_tries_each_dead_sentinel_once(
    dead_sentinels: list[DroppingListener],
) -> None:
    install()
    url = url_of(dead_sentinels)
    settings = Settings.from_env(
        {"CELERY_BROKER_URL": url, "WORKER_APP_SENTINEL_MASTER": CONFIG.master,
         "WORKER_APP_SENTINEL_USERNAME": "sentinel-user",
         "WORKER_APP_SENTINEL_PASSWORD": "sentinel-pass"}
    )  # fmt: skip
    options: dict[str, Any] = transport_options(settings, None)
    # kombu connects (looks the master up) as it opens its first channel.
    with (
        Connection(url, transport_options=options) as connection,
        pytest.raises((MasterNotFoundError, OperationalError), match="No master found"),
    ):
        connection.connect()
    # connect() tries twice (kombu's own retry); each try asks each Sentinel once (redis-py's
    # default made it 11 per try: 22 each).
    assert [s.accepted for s in dead_sentinels] == [2, 2]


def test_redbeat_options_try_each_dead_sentinel_once(
    dead_sentinels: list[DroppingListener],
) -> None:
    _, options = redbeat_options(url_of(dead_sentinels), CONFIG)
    # What redbeat.schedulers.get_redis does with redbeat_redis_options.
    sentinel = Sentinel(
        [tuple(address) for address in options["sentinels"]],
        sentinel_kwargs=options["sentinel_kwargs"],
        socket_timeout=options["socket_timeout"],
    )
    with pytest.raises(MasterNotFoundError):
        sentinel.master_for(options["service_name"]).ping()
    assert [s.accepted for s in dead_sentinels] == [1, 1]


def test_the_sentinel_options_serialize_for_the_remote_control_without_the_password() -> None:
    """A worker's ``stats`` reply carries its broker's transport options through kombu's JSON:
    the Sentinels' options encode (a bare ``Retry`` did not, and the worker never answered),
    with the password masked, and still unpack as the connection arguments."""
    from kombu.utils.json import dumps, loads  # noqa: PLC0415

    settings = Settings.from_env(
        {
            "CELERY_BROKER_URL": "sentinel://celery:data-pw@127.0.0.1:26379/0",
            "WORKER_APP_SENTINEL_MASTER": "main",
            "WORKER_APP_SENTINEL_USERNAME": "sentinel-user",
            "WORKER_APP_SENTINEL_PASSWORD": SECRET,
        }
    )
    options = transport_options(settings)
    shown = loads(dumps({"transport_options": options}))["transport_options"]
    assert shown["sentinel_kwargs"] == {
        "retry": "0 retries",
        "username": "sentinel-user",
        "password": MASKED,
    }
    assert SECRET not in dumps(options)
    unpacked = dict(**options["sentinel_kwargs"])
    assert unpacked["password"] == SECRET
    assert unpacked["retry"].get_retries() == 0
    _, redbeat = redbeat_options(settings.broker_url, SentinelConfig("main", password=SECRET))
    assert loads(dumps(redbeat))["sentinel_kwargs"]["password"] == MASKED
