"""A real redis-server on a free loopback port, in a temporary directory."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import redis
import yaml

from tests.support.ports import free_port

if TYPE_CHECKING:
    from tests.support.tls import CertificateAuthority, CertPair


@dataclass(frozen=True)
class ServerTLS:
    """TLS of a test redis-server: its certificate, the CA it trusts for client certificates,
    whether clients must present one (``auth_clients``: ``no``, ``optional``, ``yes``) and
    whether the plain TCP port stays open."""

    ca: CertificateAuthority
    server: CertPair
    auth_clients: str = "no"
    plain_port: bool = False


@dataclass
class RedisServer:
    """A running redis-server process owned by a test."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    password: str | None = None
    # With ACL users (``start_redis(acl=True)``): the user the URL logs in as.
    username: str | None = None
    args: list[str] = field(default_factory=list)
    tls: ServerTLS | None = None
    tls_port: int = 0
    # The certificate the test's own clients present to a TLS server.
    client_cert: CertPair | None = None

    def url(self, db: int = 0) -> str:
        """Connection URL for ``db`` (``rediss://`` on the TLS port of a TLS server)."""
        auth = f"{self.username or ''}:{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.tls_port}/{db}"
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A client for ``db`` (one trusting the test CA, with a client certificate, on a TLS
        server)."""
        return redis.Redis.from_url(self.url(db), **self.tls_kwargs())

    def tls_kwargs(self) -> dict[str, Any]:
        """redis-py's TLS arguments for this server (none without TLS)."""
        if self.tls is None or self.client_cert is None:
            return {}
        return {
            "ssl_ca_certs": str(self.tls.ca.cert_file),
            "ssl_certfile": str(self.client_cert.cert_file),
            "ssl_keyfile": str(self.client_cert.key_file),
        }

    def stop(self) -> None:
        """Stop the server (SIGTERM: Redis flushes its AOF and exits) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def start_again(self) -> None:
        """Start a stopped server on the same port and directory (it reloads its data)."""
        if self.process.poll() is None:
            raise RuntimeError("redis-server is still running")
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        _wait_until_up(self)


def start_redis(
    workdir: Path,
    *,
    appendonly: bool = False,
    password: str | None = None,
    tls: ServerTLS | None = None,
    acl: bool = False,
) -> RedisServer:
    """Start redis-server bound to 127.0.0.1 on a free port and wait until it answers PING.

    With ``acl`` it runs with the ACL file the redis role writes (roles/redis/templates/users.acl.j2
    with the role's default rules: the default user off, ``celery`` and ``exporter`` users with
    random passwords), and its URL logs in as ``celery``.

    With ``tls`` it listens with TLS on a second free port (``--tls-port``) and, unless
    ``tls.plain_port``, on no plain TCP port (``--port 0``; ``port`` is then one nothing
    listens on)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run 'apt-get install redis-server' "
            "(.ci/run installs it on CI machines)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--daemonize", "no",
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip
    username = None
    if acl:
        username, password = "celery", secrets.token_urlsafe(24)
        (workdir / "users.acl").write_text(_role_acl(password))
        args += ["--aclfile", str(workdir / "users.acl")]
    elif password:
        args += ["--requirepass", password]
    tls_port = 0
    if tls is not None:
        tls_port = free_port()
        if not tls.plain_port:
            args[args.index("--port") + 1] = "0"
        args += [
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(tls.server.cert_file),
            "--tls-key-file", str(tls.server.key_file),
            "--tls-ca-cert-file", str(tls.ca.cert_file),
            "--tls-auth-clients", tls.auth_clients,
        ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client_cert = tls.ca.issue(f"client-{tls_port}", client=True) if tls else None
    server = RedisServer(
        port=port, workdir=workdir, process=process, password=password, username=username,
        args=args, tls=tls, tls_port=tls_port, client_cert=client_cert,
    )  # fmt: skip
    _wait_until_up(server)
    return server


def _role_acl(celery_password: str) -> str:
    """The redis role's ACL file, rendered with its defaults (one source for the rules)."""
    role = Path(__file__).resolve().parents[2] / "roles" / "redis"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    env.filters["hash"] = lambda value, kind: hashlib.new(kind, value.encode()).hexdigest()
    env.filters["bool"] = bool
    return env.from_string((role / "templates" / "users.acl.j2").read_text()).render(
        {**defaults, "redis_celery_password": celery_password,
         "redis_exporter_password": secrets.token_urlsafe(24)}
    )  # fmt: skip


def _wait_until_up(server: RedisServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.workdir / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server exited with {server.process.returncode}:\n{log}")
        try:
            # Up is up whatever names the server's certificate carries.
            readiness = {"ssl_check_hostname": False} if server.tls is not None else {}
            if redis.Redis.from_url(server.url(), **server.tls_kwargs(), **readiness).ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError):
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server on port {server.port} did not answer within {timeout} s")
