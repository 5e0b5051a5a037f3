"""A real PostgreSQL server (Debian's postgresql-15) on a free loopback port, in a temp dir.

``initdb`` and ``postgres`` refuse to run as root: when the tests run as root, the server runs
as the ``postgres`` user (``Popen(user=...)``), in a directory owned by it. The superuser
authenticates with a password over TCP on 127.0.0.1 only; no Unix socket outside the temp dir.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.support.ports import free_port

VERSION = "15"
BINDIR = Path(f"/usr/lib/postgresql/{VERSION}/bin")
SUPERUSER = "postgres"
#: The account the server runs as when the tests run as root.
SYSTEM_USER = "postgres"


@dataclass
class PostgresServer:
    """A running ``postgres`` process owned by a test session."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    password: str

    @property
    def log_path(self) -> Path:
        """The server's log (stderr)."""
        return self.workdir / "postgres.log"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection (autocommit) to ``dbname``."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
            **kwargs,
        )

    def create_database(self, name: str, owner: str, password: str) -> None:
        """A login role ``owner`` with ``password`` and a database ``name`` it owns."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(owner), sql.Literal(password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: sessions are ended, data flushed), then remove the directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _as_user() -> dict[str, Any]:
    """``Popen`` arguments that drop root to the ``postgres`` account (nothing otherwise)."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root needs the {SYSTEM_USER!r} account that Debian's postgresql "
            "package creates: run 'apt-get install postgresql-15'"
        ) from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _own(path: Path, popen_user: dict[str, Any]) -> None:
    if popen_user:
        os.chown(path, popen_user["user"], popen_user["group"])


def start_postgres() -> PostgresServer:
    """initdb a cluster in a new temp dir, start ``postgres`` on 127.0.0.1:<free port> and
    wait until it accepts a connection. ``stop()`` removes the directory."""
    for tool in ("initdb", "postgres"):
        if not (BINDIR / tool).exists():
            raise RuntimeError(
                f"{BINDIR / tool} is missing: run 'apt-get install postgresql-{VERSION}' "
                "(.ci/run installs it on CI machines)"
            )
    popen_user = _as_user()
    # Not under pytest's basetemp: that is mode 0700 for root, which the postgres account
    # cannot traverse.
    workdir = Path(tempfile.mkdtemp(prefix="worker-app-pg-"))
    _own(workdir, popen_user)
    password = secrets.token_urlsafe(16)
    pwfile = workdir / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _own(pwfile, popen_user)
    data = workdir / "data"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    initdb_args = [
        str(BINDIR / "initdb"),
        "--pgdata", str(data),
        "--username", SUPERUSER,
        "--pwfile", str(pwfile),
        "--auth-host", "scram-sha-256",
        "--auth-local", "peer",
        "--encoding", "UTF8",
        "--locale", "C.UTF-8",
        "--no-sync",
    ]  # fmt: skip
    initdb = subprocess.run(
        initdb_args,
        env=env,
        cwd=workdir,
        capture_output=True,
        check=False,
        **popen_user,
    )
    pwfile.unlink()
    if initdb.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(
            f"initdb failed with {initdb.returncode}:\n{initdb.stdout.decode()}"
            f"{initdb.stderr.decode()}"
        )
    port = free_port()
    args = [
        str(BINDIR / "postgres"),
        "-D", str(data),
        "-c", "listen_addresses=127.0.0.1",
        "-c", f"port={port}",
        "-c", f"unix_socket_directories={workdir}",
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", "max_connections=100",
    ]  # fmt: skip
    log = (workdir / "postgres.log").open("wb")
    process = subprocess.Popen(
        args, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, **popen_user
    )
    log.close()
    server = PostgresServer(port=port, workdir=workdir, process=process, password=password)
    try:
        _wait_until_up(server)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def _wait_until_up(server: PostgresServer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"postgres exited with {server.process.returncode}:\n"
                f"{server.log_path.read_text(errors='replace')}"
            )
        try:
            with server.connect() as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(
        f"postgres on port {server.port} did not accept connections within {timeout} s:\n"
        f"{server.log_path.read_text(errors='replace')}"
    )
