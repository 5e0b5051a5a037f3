"""A fleet of worker pools under a real supervisord, as on a host.

supervisord restarts a worker whose main process dies (``autorestart``); its
XML-RPC interface over a private unix socket tells PIDs, states and start
times, so a test can see restarts (a crash loop) and kill processes at will.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the prefork pool processes of a worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class Fleet:
    """Worker pools run by supervisord in ``workdir``."""

    workdir: Path
    env: dict[str, str]
    pools: dict[str, int]  # pool name -> processes (--concurrency)
    loglevel: str = "WARNING"
    process: subprocess.Popen[bytes] | None = None
    seen_groups: set[int] = field(default_factory=set)

    @property
    def socket(self) -> Path:
        return self.workdir / "supervisor.sock"

    def _config(self) -> str:
        lines = [
            "[unix_http_server]",
            f"file={self.socket}",
            "chmod=0700",
            "[supervisord]",
            f"logfile={self.workdir / 'supervisord.log'}",
            f"pidfile={self.workdir / 'supervisord.pid'}",
            "nodaemon=true",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        ]
        for pool, processes in self.pools.items():
            command = [
                sys.executable, "-m", "worker_app.cli", "worker", "--pool", pool,
                "--concurrency", str(processes), "--hostname", f"{pool}@chaos",
                "--no-events", "--metrics-port", "0", "--loglevel", self.loglevel,
                "--without-gossip", "--without-mingle",
            ]  # fmt: skip
            lines += [
                f"[program:{pool}]",
                f"command={' '.join(command)}",
                f"directory={ROOT}",
                "autorestart=true",
                "startsecs=1",
                "startretries=1000",
                "stopsignal=TERM",
                "stopwaitsecs=20",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={self.workdir / f'{pool}.log'}",
                "stdout_logfile_maxbytes=0",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 90) -> None:
        """Start supervisord and wait until every pool runs and consumes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "supervisord.conf"
        config.write_text(self._config())
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"supervisord exited: {self.workdir / 'supervisord.log'}")
            try:
                if all(p["statename"] == "RUNNING" for p in self.info().values()) and all(
                    len(children_of(pid)) >= self.pools[name] for name, pid in self.mains().items()
                ):
                    return
            except (OSError, xmlrpc.client.Fault):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the pools did not start within {timeout} s: {self.workdir}")

    def _rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def info(self) -> dict[str, dict[str, Any]]:
        """supervisord's view of each program: pid, state, start time."""
        return {p["name"]: p for p in self._rpc().getAllProcessInfo()}

    def mains(self) -> dict[str, int]:
        """The main process of each running pool."""
        mains = {name: int(p["pid"]) for name, p in self.info().items() if p["pid"]}
        self.seen_groups.update(mains.values())
        return mains

    def processes(self) -> list[tuple[str, str, int]]:
        """Every worker process: (pool, "main" | "child", pid)."""
        found = []
        for pool, pid in self.mains().items():
            found.append((pool, "main", pid))
            found += [(pool, "child", child) for child in children_of(pid)]
        return found

    def log(self, pool: str) -> str:
        """What a pool's workers wrote (all incarnations)."""
        return (self.workdir / f"{pool}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop supervisord (it stops the workers), then kill any orphans."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Pool processes orphaned by a killed main keep the main's process group.
        for group in self.seen_groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
