"""worker_app's transport: closing a consumer on a half-open connection is bounded.

The deterministic form of Celery's own ``t/integration/test_connection_recovery.py``, which
failed with the transport (``make upstream-celery``): a consumer waits in a pending reply when
the peer goes silent without FIN or RST (a suspended VM, a firewall dropping the flow). Celery
bounds the reads of the sockets that are already open, then closes the connection (reconnect,
cold shutdown). The close read the pending reply (bounded: it times out) and then wrote the
in-flight list back on a fresh pooled connection, whose reads nothing bounds: the worker hung
there forever. Now a pending reply Redis does not give ends the close; what the consumer holds
is left to this process's next consumer, as when the transport is detached.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

from tests.support.redis_server import RedisServer
from worker_app.broker_transport import TRANSPORT_PATH, ReliableChannel

pytestmark = pytest.mark.integration


class SilentProxy:
    """A TCP proxy to Redis that can go silent: it keeps both sockets open and relays nothing."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.silent = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self.closed.is_set():
            if self.silent.is_set():
                time.sleep(0.1)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        for sock in [self.server, *self.sockets]:
            sock.close()


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[SilentProxy]:
    silent = SilentProxy(redis_server.port)
    yield silent
    silent.close()


def _bounded(target: Any, deadline: float) -> tuple[bool, list[BaseException]]:
    """Run ``target`` in a thread: (finished within ``deadline``, what it raised)."""
    done = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported to the test
            raised.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(deadline), raised


def test_closing_a_consumer_whose_peer_went_silent_is_bounded(
    proxy: SilentProxy, redis_server: RedisServer
) -> None:
    connection = Connection(
        f"redis://127.0.0.1:{proxy.port}/0",
        transport=TRANSPORT_PATH,
        transport_options={"polling_interval": 60},
    )
    connection.connect()
    consumer = Consumer(connection, queues=[Queue("half_open")], accept=["json"])
    consumer.consume()
    channel = consumer.channel
    with contextlib.suppress(TimeoutError):  # nothing to deliver: the reply stays pending
        connection.drain_events(timeout=1.0)
    assert channel._in_poll, "no reply pending: the test would prove nothing"
    proxy.silent.set()
    # What Celery does before a teardown (celery.utils.threads.bound_open_broker_sockets):
    # the reads of the sockets already open are bounded.
    channel.client.connection._sock.settimeout(1.0)
    abandoned_before = set(ReliableChannel.abandoned)

    finished, raised = _bounded(connection.close, deadline=10)

    assert finished, "Connection.close() still blocked after 10 s on a half-open connection"
    assert not raised, f"close crashed instead: {raised!r}"
    # What the consumer held is left to this process's next consumer, not dropped.
    assert channel.inflight_key in ReliableChannel.abandoned - abandoned_before
    ReliableChannel.abandoned.discard(channel.inflight_key)
    # Redis itself is fine: only the path through the silent proxy is.
    with Connection(redis_server.url(0), transport=TRANSPORT_PATH) as direct:
        direct.default_channel.client.ping()
