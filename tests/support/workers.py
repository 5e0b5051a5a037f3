"""Real Celery worker processes started the way hosts start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WorkerProcess:
    """A worker subprocess and the log file it writes."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        """Wait until ``text`` appears in the log (fails if the worker exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not in worker log after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL the process group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_worker(
    args: Sequence[str], env: dict[str, str], log_path: Path, *, ready_text: str = "ready."
) -> WorkerProcess:
    """Run ``python -m celery <args>`` (or another module) in its own process group."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log_file.close()
    worker = WorkerProcess(process=process, log_path=log_path)
    try:
        worker.wait_for_log(ready_text, timeout=60)
    except BaseException:
        worker.stop(timeout=5)
        raise
    return worker
