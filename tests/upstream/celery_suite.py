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

The CI subset (``--subset``, ``make upstream-celery-quick``): what a broker transport carries
in every deployment, in about 4 minutes rather than 24 (per-test times from a full run here):

* ``test_tasks.py`` (~175 s in full): calls, retries, revokes, countdown/ETA, ignore_result,
  signals, result states: the publish, deliver, ack path.
* ``test_inspect.py`` (~43 s): remote control and inspect (``ping``, ``active``, ``revoke``...):
  the broadcast (fanout) exchange and reply queues, another path through the transport.
* ``test_canvas.py::test_chain`` (~138 s): canvas basics, each step a task published by the
  worker. Groups and chords (``test_group``, ``test_chord``: ~1,100 s, three chord tests alone
  600 s) are mostly the result backend's business, left to the full run.
* ``test_connection_recovery.py`` (~16 s): teardown of a half-open connection, the one place
  the full run found the transport wrong (a worker hung forever in its reconnect).

Deselected (``SUBSET_DESELECT``): the slowest tests of those files, 10-31 s each of waiting
for time limits, expiry and retry countdowns. ``--deselect`` matches id prefixes, so
``test_retry`` takes its three variants along; a retry still runs in
``test_task_redis_result_backend::test_retry_preserves_ignore_result_*``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.upstream.run import HERE, ROOT, Suite

REQUIREMENTS = (ROOT / "requirements" / "runtime.txt", HERE / "celery-requirements.txt")
FULL = ("t/integration", "--ignore=t/integration/test_backend.py")
SUBSET = (
    "t/integration/test_tasks.py",
    "t/integration/test_inspect.py",
    "t/integration/test_canvas.py::test_chain",
    "t/integration/test_connection_recovery.py",
)
SUBSET_DESELECT = (
    "t/integration/test_tasks.py::test_tasks::test_retry",
    "t/integration/test_tasks.py::test_tasks::test_timeout",
    "t/integration/test_tasks.py::test_tasks::test_expired",
    "t/integration/test_tasks.py::test_tasks::test_revoke_keeps_state_of_task_started_elsewhere",
    "t/integration/test_tasks.py::test_tasks::test_revoked_by_headers_complex_canvas",
    "t/integration/test_canvas.py::test_chain::test_chain_error_handler_with_eta",
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
    if subset:
        tests = (*tests, *(f"--deselect={test_id}" for test_id in SUBSET_DESELECT))
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
