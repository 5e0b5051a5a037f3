"""A real redis-server on a free loopback port, in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.ports import free_port


@dataclass
class RedisServer:
    """A running redis-server process owned by a test."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    password: str | None = None
    args: list[str] = field(default_factory=list)

    def url(self, db: int = 0) -> str:
        """Connection URL for ``db``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A client for ``db``."""
        return redis.Redis.from_url(self.url(db))

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
    workdir: Path, *, appendonly: bool = False, password: str | None = None
) -> RedisServer:
    """Start redis-server bound to 127.0.0.1 on a free port and wait until it answers PING."""
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
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = RedisServer(port=port, workdir=workdir, process=process, password=password, args=args)
    _wait_until_up(server)
    return server


def _wait_until_up(server: RedisServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.workdir / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server exited with {server.process.returncode}:\n{log}")
        try:
            if server.client().ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError):
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server on port {server.port} did not answer within {timeout} s")
