"""TLS to Redis on the client side: ``rediss://`` URLs, verified by default.

One :class:`TLSConfig` (from ``WORKER_APP_REDIS_TLS_*``, see ``Settings.tls``) gives the same
redis-py arguments (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``,
``ssl_check_hostname``) to every client of a process: Celery's broker (``broker_use_ssl``) and
result backend (``redis_backend_use_ssl``), RedBeat (``redbeat_redis_use_ssl``) and worker_app's
own clients (``worker_app.state_redis.client_for``). :func:`describe` turns a failed handshake
into one line that names the host and the cause.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

SCHEME = "rediss"
#: ``WORKER_APP_REDIS_TLS_CERT_REQS`` values: the server's certificate is verified (``required``,
#: the default) or, only when set so explicitly, not at all (``none``).
CERT_REQS = {"required": ssl.CERT_REQUIRED, "none": ssl.CERT_NONE}
#: OpenSSL's X509_V_ERR_* codes that have their own explanation.
_HOSTNAME_MISMATCH = 62
_IP_MISMATCH = 64
_EXPIRED = 10


def is_tls_url(url: str | None) -> bool:
    """Whether ``url`` is a ``rediss://`` URL."""
    return bool(url) and str(url).strip().lower().startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class TLSConfig:
    """How a client verifies the Redis server, and the certificate it presents itself."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True

    @property
    def verifies(self) -> bool:
        """Whether the server's certificate is verified."""
        return self.cert_reqs != "none"

    def redis_kwargs(self) -> dict[str, Any]:
        """redis-py's ``SSLConnection`` arguments; also the value of Celery's
        ``broker_use_ssl`` and ``redis_backend_use_ssl`` and of RedBeat's
        ``redbeat_redis_use_ssl``, which pass them on. Without a CA file the server's
        certificate is verified against the system's CA store (``ssl.create_default_context``)."""
        kwargs: dict[str, Any] = {
            "ssl_cert_reqs": CERT_REQS[self.cert_reqs],
            "ssl_check_hostname": self.verifies and self.check_hostname,
        }
        if self.ca_file:
            kwargs["ssl_ca_certs"] = self.ca_file
        if self.cert_file:
            kwargs["ssl_certfile"] = self.cert_file
        if self.key_file:
            kwargs["ssl_keyfile"] = self.key_file
        return kwargs


class TLSRefusedError(redis.ConnectionError):
    """A TLS handshake with Redis failed for a reason retrying does not cure (a certificate the
    client does not trust, or the server does not accept); the message is one line."""


def ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``exc`` (redis-py and kombu wrap it), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(exc: BaseException, url: str, config: TLSConfig) -> str | None:
    """One line saying why the TLS connection to the Redis of ``url`` failed, or None when
    ``exc`` is no TLS failure (Redis down, a timeout: something retrying may cure)."""
    error = ssl_error(exc)
    if error is None:
        return None
    parts = urlsplit(url.split(";", maxsplit=1)[0].strip())
    host = parts.hostname or "127.0.0.1"
    where = f"{host}:{parts.port or 6379}"
    trusted = (
        f"the CA file {config.ca_file} (WORKER_APP_REDIS_TLS_CA_FILE)"
        if config.ca_file
        else "the system CA store (no WORKER_APP_REDIS_TLS_CA_FILE is set)"
    )
    reason = str(getattr(error, "reason", None) or "")
    if isinstance(error, ssl.SSLCertVerificationError):
        code = getattr(error, "verify_code", None)
        detail = getattr(error, "verify_message", None) or str(error)
        if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
            cause = (
                f"the server's certificate does not name the host {host!r} ({detail}): connect "
                "with a name the certificate carries"
            )
        elif code == _EXPIRED:
            cause = f"the server's certificate has expired ({detail})"
        else:
            cause = f"the server's certificate is not signed by a CA in {trusted} ({detail})"
    elif "CERTIFICATE_REQUIRED" in reason:
        cause = (
            "the server requires a client certificate: set WORKER_APP_REDIS_TLS_CERT_FILE and "
            "WORKER_APP_REDIS_TLS_KEY_FILE"
        )
    elif isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        # TLS 1.3: the server checks the client's certificate after the client's handshake
        # finished, and may close before its alert is read.
        cause = (
            "the server closed the connection after the handshake: it probably requires a "
            "client certificate (set WORKER_APP_REDIS_TLS_CERT_FILE and "
            "WORKER_APP_REDIS_TLS_KEY_FILE)"
            if not config.cert_file
            else f"the server closed the connection after the handshake: it probably does not "
            f"accept the client certificate {config.cert_file}"
        )
    elif "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
        cause = f"the server refused the client certificate {config.cert_file} ({reason})"
    elif reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        cause = f"the server does not speak TLS on port {parts.port or 6379} ({reason})"
    else:
        cause = f"the TLS handshake failed ({' '.join(str(error).split())})"
    return f"TLS to Redis at {where} refused: {cause}"


def refused(exc: BaseException, url: str, config: TLSConfig) -> TLSRefusedError | None:
    """:class:`TLSRefusedError` with :func:`describe`'s line, or None for no TLS failure."""
    line = describe(exc, url, config)
    return None if line is None else TLSRefusedError(line)
