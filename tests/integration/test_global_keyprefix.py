"""kombu's ``global_keyprefix`` end to end: an app that names one in its transport options
keeps every key it writes under it — queues, unacked records, consumer registry, and
worker_app's own keys (DLQ, task records) — and the CLI and the exporter find them there.
A real worker of the user's app, a real redis-server (this module's own: nothing else writes
to it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from tests.integration.conftest import StartWorker
from tests.support.waiting import wait_until
from worker_app import configure
from worker_app.configuration import settings_of
from worker_app.dlq.writer import store_for
from worker_app.metrics.exporter import BrokerCollector, QueueLayout

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "tenant1:"
APP = """
import os
from celery import Celery
import worker_app

app = Celery("tenant", broker=os.environ["CELERY_BROKER_URL"])
app.conf.broker_transport_options = {"global_keyprefix": "tenant1:"}
worker_app.configure(app)
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tenant")
    (directory / "tenant_app.py").write_text(textwrap.dedent(APP))
    return directory


def _tenant_app(broker_url: str) -> Any:
    app = Celery("tenant", broker=broker_url)
    app.conf.broker_transport_options = {"global_keyprefix": PREFIX}
    return configure(app)


def test_a_dead_letter_of_a_prefixed_app_lives_under_the_prefix_and_is_found_there(
    start_pool_worker: StartWorker,
    worker_env: dict[str, str],
    state: redis.Redis,
    app_dir: Path,
) -> None:
    before = {key.decode() for key in state.keys("*")}
    pythonpath = os.pathsep.join([str(app_dir), str(ROOT)])
    start_pool_worker("default", "-A", "tenant_app:app", PYTHONPATH=pythonpath)
    app = _tenant_app(worker_env["CELERY_BROKER_URL"])
    assert settings_of(app).key_prefix == f"{PREFIX}worker_app"
    token = uuid.uuid4().hex[:12]
    app.send_task("examples.always_fails", args=[token], queue="default")
    store = store_for(settings_of(app))
    entries = wait_until(
        lambda: [e for e in store.iter_entries() if token in e.args],
        timeout=60,
        what="the dead letter",
    )
    assert entries[0].task_name == "examples.always_fails"
    written = {key.decode() for key in state.keys("*")} - before
    assert any(key.startswith(f"{PREFIX}worker_app:dlq") for key in written), written
    assert all(key.startswith(PREFIX) for key in written), sorted(written)
    # The app without the prefix sees an empty DLQ: nothing leaked to the unprefixed keys.
    plain = store_for(settings_of(_plain_app(worker_env["CELERY_BROKER_URL"])))
    assert list(plain.iter_entries()) == []

    # The CLI, given the app, lists it.
    listed = subprocess.run(
        [sys.executable, "-m", "worker_app.cli", "-A", "tenant_app:app", "dlq", "list"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **worker_env, "PYTHONPATH": pythonpath},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert entries[0].id in listed.stdout

    # The exporter, given the app's layout and store, counts it and the prefixed queues.
    layout = QueueLayout.from_transport_options(["default"], app.conf.broker_transport_options)
    collector = BrokerCollector(state, layout, store, 100)
    assert _samples(collector)[("worker_app_dlq_entries", ())] == 1.0
    state.lpush(f"{PREFIX}default", b"{}")  # a message waiting on the prefixed queue
    samples = _samples(collector)
    assert samples[("celery_queue_length", (("queue_name", "default"),))] == 1.0, samples
    state.delete(f"{PREFIX}default")


def _plain_app(broker_url: str) -> Any:
    return configure(Celery("plain", broker=broker_url))


def _samples(collector: BrokerCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }
