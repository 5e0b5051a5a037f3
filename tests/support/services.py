"""Host binaries (Prometheus, Alertmanager, exporters, small scripts) run by a test on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until


@dataclass
class Service:
    """A background process owned by a test, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL its process group if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def binary(name: str, package: str) -> str:
    """The path of ``name``, or a clear error naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is missing: apt-get install {package} (.ci/run installs it)")
    return path


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """Status and body of a GET to a loopback URL (0 when nothing answers)."""
    assert url.startswith("http://127.0.0.1:"), url
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except (urllib.error.URLError, OSError):
        return 0, b""


def get_json(url: str) -> Any:
    status, body = http_get(url)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


def start_service(
    name: str, argv: Sequence[str], workdir: Path, ready_url: str, timeout: float = 60
) -> Service:
    """Start ``argv`` in its own process group and wait until ``ready_url`` answers 200."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    service = Service(name, process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log()}")
        return http_get(ready_url)[0] == 200

    try:
        wait_until(ready, timeout=timeout, interval=0.2, what=f"{name} at {ready_url}")
    except BaseException:
        service.stop(timeout=5)
        raise
    return service
