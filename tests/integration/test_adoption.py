"""Adopting worker_app in a process that has its own Celery app: importing it changes nothing,
its base classes bind to the user's app, and stock Celery producers reach the pools on every
priority (Celery's default separator), including messages left on worker_app 0.1's keys.
(The Django project's path is in test_django_project.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from tests.integration.conftest import StartWorker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ["critical", "high", "default", "low"]

SIDE_EFFECTS = """
import logging, sys
import kombu.transport
from celery import Celery, current_app, shared_task, signals

class Marker(logging.Handler):
    def emit(self, record): pass

logging.getLogger().addHandler(Marker())
stock = Celery("proj", broker="redis://127.0.0.1:1/0")
stock.set_current()

def snapshot():
    return {
        "redis_transport": kombu.transport.TRANSPORT_ALIASES["redis"],
        "current_app": current_app._get_current_object() is stock,
        "root_handlers": [type(h).__name__ for h in logging.getLogger().handlers],
        "setup_logging": len(signals.setup_logging.receivers),
        "before_task_publish": len(signals.before_task_publish.receivers),
        "amqp_cls": str(stock.amqp_cls),
    }

before = snapshot()
import worker_app, worker_app.task_classes, worker_app.cli, worker_app.examples
from worker_app import RetryableTask, CriticalTask
after_import = snapshot()

@stock.task(base=RetryableTask, name="proj.explicit")
def explicit():
    return 1

@shared_task(base=CriticalTask, name="proj.shared")
def shared():
    return 2

stock.finalize()
bound = {
    "explicit": explicit.app is stock,
    "shared": stock.tasks["proj.shared"].app is stock,
    "shared_queue": stock.tasks["proj.shared"].queue,
    "bundled_app_created": "app" in vars(worker_app),
}
json.dump({"before": before, "after_import": after_import, "bound": bound}, sys.stdout)
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (nothing imported by the test process leaks in)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_importing_worker_app_changes_nothing_in_a_process_with_a_stock_app() -> None:
    result = run_python("import json\n" + SIDE_EFFECTS)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["after_import"] == seen["before"]
    assert seen["before"]["redis_transport"] == "kombu.transport.redis:Transport"
    assert seen["before"]["current_app"] is True
    assert "Marker" in seen["before"]["root_handlers"]
    assert seen["bound"] == {
        "explicit": True,
        "shared": True,
        "shared_queue": "critical",
        "bundled_app_created": False,
    }


STOCK_PRODUCER = """
import json, sys
from celery import Celery

# A team's application server: stock Celery, default transport options (no 'sep', no steps).
app = Celery("proj", broker=sys.argv[1])
tokens = []
for queue in json.loads(sys.argv[2]):
    for priority in range(10):
        token = f"{queue}-{priority}-{sys.argv[3]}"
        app.send_task("examples.record", args=[token], queue=queue, priority=priority)
        tokens.append(token)
json.dump(tokens, sys.stdout)
"""


@pytest.fixture(scope="module")
def one_pool_for_all_queues(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A catalogue whose one pool consumes the four standard queues (one worker serves all)."""
    path = tmp_path_factory.mktemp("catalogue") / "pools.yml"
    pool = {
        "name": "everything",
        "queues": QUEUES,
        "concurrency": 2,
        "max_tasks_per_child": 100,
        "max_memory_per_child_kb": 262144,
        "soft_time_limit": 50,
        "time_limit": 60,
        "metrics_port": 9890,
        "wait_slo_seconds": 60,
    }
    catalogue = {"default_queue": "default", "maintenance_queue": "low", "pools": [pool]}
    path.write_text(yaml.safe_dump(catalogue))
    return str(path)


def test_a_stock_producer_reaches_the_pools_on_every_queue_and_priority(
    start_pool_worker: StartWorker,
    worker_env: dict[str, str],
    state: redis.Redis,
    one_pool_for_all_queues: str,
) -> None:
    run = uuid.uuid4().hex[:8]
    # A message a worker_app 0.1 producer left on its priority key ('queue:3').
    legacy = redis.Redis.from_url(worker_env["CELERY_BROKER_URL"])
    legacy_token = f"legacy-{run}"
    legacy_producer = f"""
import sys
from celery import Celery
app = Celery("old", broker=sys.argv[1])
app.conf.broker_transport_options = {{"sep": ":", "priority_steps": [0, 3, 6, 9],
                                      "queue_order_strategy": "priority"}}
app.send_task("examples.record", args=["{legacy_token}"], queue="high", priority=5)
"""
    published = run_python(legacy_producer, worker_env["CELERY_BROKER_URL"])
    assert published.returncode == 0, published.stderr
    legacy_keys = [f"high:{step}" for step in (3, 6, 9)]
    assert sum(legacy.llen(key) for key in legacy_keys) == 1

    producer = run_python(STOCK_PRODUCER, worker_env["CELERY_BROKER_URL"], json.dumps(QUEUES), run)
    assert producer.returncode == 0, producer.stderr
    tokens = json.loads(producer.stdout)
    assert len(tokens) == 40
    # Stock Celery's priority keys: the queue name, Celery's separator, the step.
    assert all(legacy.llen(f"{queue}\x06\x16{step}") for queue in QUEUES for step in (3, 6, 9))

    worker = start_pool_worker("everything", WORKER_APP_POOLS_FILE=one_pool_for_all_queues)
    try:
        wanted = [*tokens, legacy_token]

        def ran() -> list[str]:
            return [t for t in wanted if not state.exists(f"worker_app:examples:ran:{t}")]

        wait_until(lambda: not ran(), timeout=60, what="every stock message to run")
        assert "moved 1 message(s) from legacy priority keys" in worker.log()
        assert sum(legacy.llen(key) for key in legacy_keys) == 0
    finally:
        worker.stop()


def test_the_cli_names_an_app_it_cannot_use_in_one_line(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "_unconfigured_app.py").write_text(
        textwrap.dedent(
            """
            from celery import Celery
            app = Celery("unconfigured")
            """
        )
    )
    env = {**worker_env, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    for spec, expected in [
        ("_unconfigured_app", "is not configured for worker_app: call worker_app.configure"),
        ("no_such_module_here", "cannot load the Celery app 'no_such_module_here'"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "worker_app.cli", "-A", spec, "dlq", "stats"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 3
