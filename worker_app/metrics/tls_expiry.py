"""When the Redis servers' TLS certificates expire, as the clients see them.

The exporter does a TLS handshake with each Redis endpoint its settings name (the host of a
``rediss://`` URL; with ``WORKER_APP_SENTINEL_TLS`` every Sentinel of the ``sentinel://`` URL
and every data node they name), verified exactly as the workers verify it, at most every
``interval`` seconds (a scrape in between gets the last result). A handshake that verifies
gives the certificate's ``notAfter``; one that fails (an expired certificate, one no longer
signed by the CA, a refused client certificate: the probe sends a PING and needs an answer)
gives ``worker_app_tls_handshake_ok 0``.

Python's ``ssl`` module reads ``notAfter`` from a verified peer certificate
(``getpeercert``), so no X.509 library is needed at run time.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker_app.sentinel import SentinelConfig, SentinelURL, is_sentinel_url
from worker_app.tls import TLSConfig, is_tls_url


@dataclass(frozen=True)
class Endpoint:
    """A TLS endpoint: a Redis data node or a Sentinel."""

    role: str  # "redis" or "sentinel"
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Probe:
    """What one handshake found: whether it verified, and the certificate's expiry."""

    endpoint: Endpoint
    ok: bool
    not_after: float | None = None


def context_for(tls: TLSConfig) -> ssl.SSLContext:
    """An ``SSLContext`` that verifies a server as redis-py does with ``tls.redis_kwargs()``."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    context.check_hostname = tls.verifies and tls.check_hostname
    if not tls.verifies:
        context.verify_mode = ssl.CERT_NONE
    return context


def probe(endpoint: Endpoint, context: ssl.SSLContext, timeout: float = 5.0) -> Probe:
    """One TLS handshake with ``endpoint``."""
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.host) as tls,
        ):
            cert = tls.getpeercert()
            # With TLS 1.3 the server checks the client's certificate after the client's
            # handshake is done: only an answer (+PONG, or -NOAUTH before AUTH) shows that the
            # server accepted the session.
            tls.sendall(b"PING\r\n")
            if not tls.recv(64):
                return Probe(endpoint, ok=False)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return Probe(endpoint, ok=False)
    not_after = cert.get("notAfter") if cert else None
    expiry = ssl.cert_time_to_seconds(str(not_after)) if not_after else None
    return Probe(endpoint, ok=True, not_after=float(expiry) if expiry is not None else None)


def endpoints_of(
    urls: Sequence[str], sentinel: SentinelConfig | None, discover: Callable[..., Any] | None = None
) -> list[Endpoint]:
    """The TLS endpoints behind ``urls``: a ``rediss://`` URL's host; with Sentinel on TLS, the
    Sentinels and the master and replicas they name (``discover``: redis-py's ``Sentinel``)."""
    found: dict[Endpoint, None] = {}
    for url in urls:
        if is_tls_url(url):
            parts = urlsplit(url)
            found[Endpoint("redis", parts.hostname or "127.0.0.1", parts.port or 6379)] = None
        elif is_sentinel_url(url) and sentinel is not None and sentinel.tls is not None:
            sentinels = SentinelURL.parse(url).sentinels
            for host, port in sentinels:
                found[Endpoint("sentinel", host, port)] = None
            for host, port in _data_nodes(sentinels, sentinel, discover):
                found[Endpoint("redis", host, port)] = None
    return list(found)


def _data_nodes(
    sentinels: Sequence[tuple[str, int]],
    config: SentinelConfig,
    discover: Callable[..., Any] | None,
) -> list[tuple[str, int]]:
    """The master and the replicas the Sentinels name (none while no Sentinel answers)."""
    import redis  # noqa: PLC0415
    from redis.sentinel import Sentinel  # noqa: PLC0415

    factory = discover or Sentinel
    client = factory(
        list(sentinels),
        sentinel_kwargs={"socket_timeout": 5, "socket_connect_timeout": 5,
                         **config.client_kwargs()},
    )  # fmt: skip
    try:
        nodes = [tuple(client.discover_master(config.master))]
        nodes += [tuple(node) for node in client.discover_slaves(config.master)]
    except redis.RedisError:
        return []
    return [(str(host), int(port)) for host, port in nodes]


class TLSExpiryCollector(Collector):
    """``worker_app_tls_handshake_ok`` and ``worker_app_tls_certificate_expiry_timestamp_seconds``
    per endpoint, re-probed at most every ``interval`` seconds."""

    def __init__(
        self,
        find: Callable[[], list[Endpoint]],
        tls: TLSConfig,
        interval: float = 300.0,
        timeout: float = 5.0,
    ) -> None:
        self.find = find
        self.context = context_for(tls)
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._probes: list[Probe] = []
        self._at = float("-inf")

    def probes(self) -> list[Probe]:
        """The last probes, refreshed when older than ``interval``."""
        with self._lock:
            if time.monotonic() - self._at >= self.interval:
                self._probes = [probe(e, self.context, self.timeout) for e in self.find()]
                self._at = time.monotonic()
            return list(self._probes)

    def collect(self) -> Iterator[Any]:
        ok = GaugeMetricFamily(
            "worker_app_tls_handshake_ok",
            "1 if the last verified TLS handshake with the endpoint succeeded.",
            labels=["endpoint", "role"],
        )
        expiry = GaugeMetricFamily(
            "worker_app_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the endpoint's verified TLS certificate (Unix time).",
            labels=["endpoint", "role"],
        )
        for found in self.probes():
            labels = [found.endpoint.address, found.endpoint.role]
            ok.add_metric(labels, 1.0 if found.ok else 0.0)
            if found.not_after is not None:
                expiry.add_metric(labels, found.not_after)
        yield ok
        yield expiry

    def describe(self) -> Iterator[Any]:
        """No probe at registration."""
        return iter(())
