"""Celery's own integration suite (``t/integration`` of the pinned Celery's sdist) for
tests/upstream/run.py: ``make upstream-celery`` (all of it) and ``make upstream-celery-quick``
(the CI subset).

Broker and result backend are the run's private redis-server (db 0 both, as Celery's own CI
runs it); the worker is the suite's ``celery_session_worker``: a thread in the pytest process
with a prefork pool, so the plugin's swap covers producer and worker consumer (the plugin
counts the connections worker_app's transport establishes; run.py refuses a swapped run that
made none). ``test_worker.py`` and ``test_serialization.py`` start ``celery worker``
subprocesses: the swapped run puts ``tests/upstream/swap_site`` (a ``sitecustomize``) on their
PYTHONPATH, so they run the transport too.

The suite needs pytest and a few packages its modules import (pydantic, SQLAlchemy,
cryptography): they are pinned in ``tests/upstream/celery-requirements.txt`` and installed with
``requirements/runtime.txt`` into ``build/upstream/venv-celery`` (created on first use, again
when either file changes), so the project's .venv stays as it is. ``test_backend.py`` is left
out: it is Azure Blob Storage only (skipped without AZUREBLOCKBLOB_URL, and cannot even be
collected without the azure SDK).

The CI subset (``--subset``), a few minutes: what a broker transport carries in every
deployment, nothing that takes minutes by design:

* ``test_tasks.py``: task calls, retries, revokes, time limits, ETA/countdown, ignore_result,
  task_received/task_sent signals, result states: the publish, deliver, ack path.
* ``test_inspect.py``: remote control and inspect (``ping``, ``active``, ``registered``,
  ``revoke``...): broadcast fan-out exchange and reply queues, a different path from tasks.
* ``test_canvas.py::test_chain``, ``::test_group`` and ``::test_chord``, ``-k "not ... "``:
  canvas basics (chains, groups, chords over the result backend) minus their slowest tests
  (see ``SUBSET_DESELECT``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.upstream.run import HERE, ROOT, Suite

REQUIREMENTS = (ROOT / "requirements" / "runtime.txt", HERE / "celery-requirements.txt")
FULL = ("t/integration", "--ignore=t/integration/test_backend.py")
SUBSET_DESELECT = ""
SUBSET = (
    "t/integration/test_tasks.py",
    "t/integration/test_inspect.py",
    "t/integration/test_canvas.py::test_chain",
    "t/integration/test_canvas.py::test_group",
    "t/integration/test_canvas.py::test_chord",
)


def venv_python(source: Path, workdir: Path) -> str:
    """build/upstream/venv-celery's python, with the pinned requirements installed."""
    venv = workdir / "venv-celery"
    python = venv / "bin" / "python"
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in REQUIREMENTS)).hexdigest()
    stamp = venv / ".installed"
    if python.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return str(python)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    requirements = [arg for path in REQUIREMENTS for arg in ("-r", str(path))]
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    stamp.write_text(digest)
    return str(python)


def env(port: int) -> dict[str, str]:
    """Broker, result backend and the suite's own Redis client on the run's server."""
    url = f"redis://127.0.0.1:{port}/0"
    return {
        "TEST_BROKER": url,
        "TEST_BACKEND": url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(port),
    }


def celery_suite(*, subset: bool) -> Suite:
    """The whole of Celery's t/integration, or the CI subset."""
    tests = SUBSET if subset else FULL
    if subset and SUBSET_DESELECT:
        tests = (*tests, "-k", SUBSET_DESELECT)
    return Suite(
        package="celery",
        tests=tests,
        env=env,
        python=venv_python,
        timeout=300,
        # Celery's fixtures (celery_parameters, ...): its CI gets them through pytest-celery's
        # entry point; the plugin module itself is all the suite needs.
        options=("-p", "celery.contrib.pytest"),
        rerun_flips=True,
        swapped_path=(str(HERE / "swap_site"),),
    )
