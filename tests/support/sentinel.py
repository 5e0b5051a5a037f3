"""A real Redis Sentinel deployment on 127.0.0.1: a primary, replicas and Sentinels (quorum 2),
with ACL users everywhere, and the means to fail its primary.

Data nodes have no default user; they know ``celery`` (clients), ``replica`` (replication)
and ``sentinel`` (what Sentinel needs on a data node). The Sentinels have no default user
either: clients and peers use ``admin``. Failure detection is short
(``down-after-milliseconds`` 1000) so a failover takes seconds.

With a CA (``start_cluster(..., tls=ca)``) every node and Sentinel listens only with TLS
(``port 0``), requires client certificates, and replicates and monitors over TLS.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.sentinel import Sentinel

from tests.support.ports import free_port
from tests.support.tls import CertificateAuthority

MASTER = "celery-master"
CELERY_PASSWORD = "celery-secret"  # noqa: S105 - test credentials
REPLICA_PASSWORD = "replica-secret"  # noqa: S105
SENTINEL_DATA_PASSWORD = "sentinel-data-secret"  # noqa: S105
SENTINEL_USER = "admin"
SENTINEL_PASSWORD = "sentinel-secret"  # noqa: S105
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000

# What Sentinel needs on a data node (Redis' documented ACL for a Sentinel user).
_SENTINEL_ON_DATA = (
    "allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish "
    "+info +client|setname +client|kill +script|kill"
)


@dataclass
class Node:
    """One redis-server process (a data node or a Sentinel) of the deployment."""

    name: str
    port: int
    workdir: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    # redis-py's TLS arguments for a connection to it (none without TLS).
    client_kwargs: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        """Start it (again), in its own directory (a Sentinel rewrites its config there)."""
        self.process = subprocess.Popen(
            self.args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last replication."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: it holds its connections and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class SentinelCluster:
    """A primary, its replicas and the Sentinels watching them."""

    data: list[Node]
    sentinels: list[Node]
    master: str = MASTER
    killed: list[Node] = field(default_factory=list)
    # The worker_app environment of its TLS (none without TLS).
    tls_env: dict[str, str] = field(default_factory=dict)

    # -- what clients use --------------------------------------------------------------
    def url(self, db: int = 0) -> str:
        """The broker URL in kombu's format: every Sentinel, the data nodes' credentials."""
        return ";".join(
            f"sentinel://celery:{CELERY_PASSWORD}@127.0.0.1:{node.port}/{db}"
            for node in self.sentinels
        )

    def env(self) -> dict[str, str]:
        """The worker_app environment for this deployment."""
        return {
            "CELERY_BROKER_URL": self.url(0),
            "WORKER_APP_SENTINEL_MASTER": self.master,
            "WORKER_APP_SENTINEL_USERNAME": SENTINEL_USER,
            "WORKER_APP_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
            **self.tls_env,
        }

    def node_client(self, node: Node, **kwargs: Any) -> redis.Redis:
        """A client of one data node, as the ``celery`` user."""
        return redis.Redis(
            host="127.0.0.1",
            port=node.port,
            username="celery",
            password=CELERY_PASSWORD,
            socket_timeout=5,
            **node.client_kwargs,
            **kwargs,
        )

    def sentinel_client(self) -> Sentinel:
        tls = self.data[0].client_kwargs
        return Sentinel(
            [("127.0.0.1", node.port) for node in self.sentinels],
            sentinel_kwargs={
                "username": SENTINEL_USER,
                "password": SENTINEL_PASSWORD,
                "socket_timeout": 1,
                **tls,
            },
            socket_timeout=5,
            **tls,
        )

    def master_client(self) -> redis.Redis:
        """A client of whichever node is the master (follows a failover)."""
        client: redis.Redis = self.sentinel_client().master_for(
            self.master, username="celery", password=CELERY_PASSWORD
        )
        return client

    # -- the deployment's state -----------------------------------------------------------
    def master_port(self) -> int | None:
        """The master's port as a majority of the live Sentinels says (None: no majority)."""
        votes: dict[int, int] = {}
        for node in self.sentinels:
            if not node.alive():
                continue
            try:
                with _sentinel_conn(node) as client:
                    _host, port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master
                    )
            except (redis.RedisError, TypeError, ValueError):
                continue
            votes[int(port)] = votes.get(int(port), 0) + 1
        for port, count in votes.items():
            if count >= 2:
                return port
        return None

    def primary(self) -> Node:
        port = self.master_port()
        for node in self.data:
            if node.port == port:
                return node
        raise AssertionError(f"no data node is the master (Sentinels say port {port})")

    def replicas(self) -> list[Node]:
        primary = self.primary()
        return [node for node in self.data if node is not primary and node.alive()]

    def wait_replicas_in_sync(self, count: int, timeout: float = 30) -> None:
        """Until the master has ``count`` replicas online (and Sentinels know them)."""
        _wait(
            lambda: self._online_replicas() >= count and self._sentinels_know_replicas(count),
            timeout,
            f"{count} replica(s) online",
        )

    def _online_replicas(self) -> int:
        try:
            primary = self.primary() if self.sentinels else self.data[0]
            info = self.node_client(primary).info("replication")
        except (redis.RedisError, AssertionError):
            return 0
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and value["state"] == "online"
        )

    def _sentinels_know_replicas(self, count: int) -> bool:
        for node in self.sentinels:
            with _sentinel_conn(node) as client:
                replicas = client.execute_command("SENTINEL", "REPLICAS", self.master)
            if len(replicas) < count:
                return False
        return True

    # -- failing it ---------------------------------------------------------------------
    def kill_primary(self) -> Node:
        """SIGKILL the master; returns it."""
        node = self.primary()
        node.kill()
        self.killed.append(node)
        return node

    def wait_for_promotion(self, old: Node, timeout: float = 30) -> tuple[Node, float]:
        """Until a majority of Sentinels names another master and it answers as one; returns
        it and the seconds waited."""
        started = time.monotonic()

        def promoted() -> Node | None:
            port = self.master_port()
            if port is None or port == old.port:
                return None
            node = next(n for n in self.data if n.port == port)
            try:
                role = self.node_client(node).execute_command("ROLE")[0]
            except redis.RedisError:
                return None
            return node if role in (b"master", "master") else None

        node = _wait(promoted, timeout, "a replica promoted")
        return node, time.monotonic() - started

    def wait_for_role(self, node: Node, role: str, timeout: float = 30) -> None:
        """Until ``node`` answers ROLE with ``role`` (``master`` or ``slave``)."""

        def has_role() -> bool:
            try:
                found = self.node_client(node).execute_command("ROLE")[0]
            except redis.RedisError:
                return False
            return bool((found.decode() if isinstance(found, bytes) else found) == role)

        _wait(has_role, timeout, f"{node.name} is a {role}")

    def restart(self, node: Node) -> None:
        """Start a killed node again (Sentinel turns it into a replica of the new master)."""
        node.start()
        _wait_answers(node, self)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {node.name}\n{node.log()[-3000:]}" for node in self.data)


def start_cluster(
    workdir: Path, replicas: int = 2, sentinels: int = 3, *,
    down_after_ms: int = DOWN_AFTER_MS, failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
    tls: CertificateAuthority | None = None,
) -> SentinelCluster:  # fmt: skip
    """Start a primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum 2), all
    with ACL users, and wait until the Sentinels see the replicas. With ``tls`` (a CA), all
    of them on TLS only, client certificates required."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run 'apt-get install redis-server'")
    client_kwargs: dict[str, Any] = {}
    tls_env: dict[str, str] = {}
    if tls is not None:
        client = tls.issue("sentinel-cluster-client", client=True)
        client_kwargs = {
            "ssl": True,
            "ssl_ca_certs": str(tls.cert_file),
            "ssl_certfile": str(client.cert_file),
            "ssl_keyfile": str(client.key_file),
        }
        tls_env = {
            "WORKER_APP_SENTINEL_TLS": "yes",
            "WORKER_APP_REDIS_TLS_CA_FILE": str(tls.cert_file),
            "WORKER_APP_REDIS_TLS_CERT_FILE": str(client.cert_file),
            "WORKER_APP_REDIS_TLS_KEY_FILE": str(client.key_file),
        }
    data: list[Node] = []
    primary_port = free_port()
    for index in range(1 + replicas):
        port = primary_port if index == 0 else free_port()
        node_dir = workdir / f"data{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        (node_dir / "users.acl").write_text(
            # As roles/redis writes it: off, with every permission (its AOF replay, #14541).
            "user default off ~* &* +@all\n"
            f"user celery on >{CELERY_PASSWORD} ~* &* +@all\n"
            f"user replica on >{REPLICA_PASSWORD} +psync +replconf +ping\n"
            f"user sentinel on >{SENTINEL_DATA_PASSWORD} {_SENTINEL_ON_DATA}\n"
        )
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(node_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(node_dir / "redis.log"),
            "--aclfile", str(node_dir / "users.acl"),
            "--masteruser", "replica",
            "--masterauth", REPLICA_PASSWORD,
            "--repl-ping-replica-period", "1",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if index:
            args += ["--replicaof", "127.0.0.1", str(primary_port)]
        if tls is not None:
            args = _tls_only(args, port, tls, f"data{index}")
        node = Node(f"data{index}", port, node_dir, args, client_kwargs=client_kwargs)
        data.append(node)
    cluster = SentinelCluster(data=data, sentinels=[], tls_env=tls_env)
    for node in data:
        node.start()
    for node in data:
        _wait_answers(node, cluster)
    # Replicas in sync before the Sentinels start: their first INFO of the primary finds
    # them (the next comes 10 s later).
    _wait(lambda: cluster._online_replicas() >= replicas, 30, f"{replicas} replica(s) online")
    for index in range(sentinels):
        port = free_port()
        node_dir = workdir / f"sentinel{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        config = node_dir / "sentinel.conf"
        listen = f"port {port}\n"
        if tls is not None:
            server, peer = (
                tls.issue(f"sentinel{index}"),
                tls.issue(f"sentinel{index}-peer", client=True),
            )
            listen = (
                f"port 0\ntls-port {port}\ntls-replication yes\ntls-auth-clients yes\n"
                f"tls-cert-file {server.cert_file}\ntls-key-file {server.key_file}\n"
                f"tls-client-cert-file {peer.cert_file}\ntls-client-key-file {peer.key_file}\n"
                f"tls-ca-cert-file {tls.cert_file}\n"
            )
        config.write_text(
            listen + "bind 127.0.0.1\n"
            f"dir {node_dir}\n"
            f"logfile {node_dir / 'redis.log'}\n"
            "user default off\n"
            f"user {SENTINEL_USER} on >{SENTINEL_PASSWORD} allchannels +@all\n"
            f"sentinel sentinel-user {SENTINEL_USER}\n"
            f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel auth-user {MASTER} sentinel\n"
            f"sentinel auth-pass {MASTER} {SENTINEL_DATA_PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        node = Node(
            f"sentinel{index}", port, node_dir, [binary, str(config), "--sentinel"],
            client_kwargs=client_kwargs,
        )  # fmt: skip
        cluster.sentinels.append(node)
        node.start()
    try:
        for node in cluster.sentinels:
            _wait(lambda node=node: _sentinel_ping(node), 30, f"{node.name} answers")
        cluster.wait_replicas_in_sync(replicas)
        _wait(lambda: _sentinels_see_each_other(cluster), 30, "Sentinels know each other")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _tls_only(args: list[str], port: int, ca: CertificateAuthority, name: str) -> list[str]:
    """A data node's arguments on TLS only: ``port`` becomes its TLS port, replication over
    TLS, client certificates required (its own, as a replica, from the same CA)."""
    server, peer = ca.issue(name), ca.issue(f"{name}-peer", client=True)
    at = args.index("--port")
    return [
        *args[:at], "--port", "0", "--tls-port", str(port), *args[at + 2 :],
        "--tls-cert-file", str(server.cert_file), "--tls-key-file", str(server.key_file),
        "--tls-client-cert-file", str(peer.cert_file),
        "--tls-client-key-file", str(peer.key_file),
        "--tls-ca-cert-file", str(ca.cert_file),
        "--tls-auth-clients", "yes", "--tls-replication", "yes",
    ]  # fmt: skip


def _sentinel_conn(node: Node) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=node.port,
        username=SENTINEL_USER,
        password=SENTINEL_PASSWORD,
        socket_timeout=1,
        **node.client_kwargs,
    )


def _sentinel_ping(node: Node) -> bool:
    try:
        with _sentinel_conn(node) as client:
            return bool(client.ping())
    except redis.RedisError:
        if not node.alive():
            raise RuntimeError(f"{node.name} exited:\n{node.log()}") from None
        return False


def _sentinels_see_each_other(cluster: SentinelCluster) -> bool:
    wanted = len(cluster.sentinels) - 1
    for node in cluster.sentinels:
        with _sentinel_conn(node) as client:
            if len(client.execute_command("SENTINEL", "SENTINELS", MASTER)) < wanted:
                return False
    return True


def _wait_answers(node: Node, cluster: SentinelCluster) -> None:
    def answers() -> bool:
        if not node.alive():
            raise RuntimeError(f"{node.name} exited:\n{node.log()}")
        try:
            return bool(cluster.node_client(node).ping())
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False

    _wait(answers, 30, f"{node.name} answers")


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
