"""A rolling deploy under continuous load loses nothing and runs nothing twice.

Runs last in the rehearsal (it restarts every worker). A producer on the controller publishes
to all four queues the whole time — quick tasks and tasks that take several seconds — while
``ansible/deploy_workers.yml`` drains, reinstalls and restarts each worker host in turn.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.rehearsal.conftest import ROOT, Rehearsal
from tests.support.waiting import wait_until

DURATIONS = (0.05, 0.2, 1.0, 4.0)  # seconds each task sleeps: "several seconds" included


@pytest.mark.timeout(1800)
def test_rolling_deploy_under_load_loses_nothing(rehearsal: Rehearsal, client_app: Any) -> None:
    run = uuid.uuid4().hex[:6]
    queues = [queue for pool in rehearsal.pools for queue in pool["queues"]]
    published: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            queue = queues[n % len(queues)]
            seconds = DURATIONS[(n // len(queues)) % len(DURATIONS)]
            token = f"roll-{run}-{n}"
            client_app.send_task("examples.sleepy", args=[token, seconds], queue=queue)
            published.append(token)
            time.sleep(0.1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    time.sleep(5)  # load is flowing before the first host drains
    started = time.monotonic()
    rc, output = rehearsal.playbook("deploy_workers.yml")
    deploy_seconds = time.monotonic() - started
    time.sleep(5)
    stop.set()
    producer.join(timeout=30)
    assert rc == 0, output[-6000:]

    client = rehearsal.redis()

    def count(kind: str, token: str) -> int:
        return int(client.llen(f"worker_app:examples:{kind}:{token}"))

    def all_finished() -> bool:
        with client.pipeline(transaction=False) as pipe:
            for token in published:
                pipe.llen(f"worker_app:examples:finished:{token}")
            return all(pipe.execute())

    wait_until(all_finished, timeout=300, interval=2, what="every published task to finish")
    started_twice = [t for t in published if count("started", t) != 1]
    finished_twice = [t for t in published if count("finished", t) != 1]
    dead = [
        e for e in json.loads(_dlq_list(rehearsal)) if str(e["args"][0]).startswith(f"roll-{run}")
    ]
    figures = {
        "published": len(published),
        "completed_exactly_once": len(published) - len(finished_twice),
        "started_more_than_once": len(started_twice),
        "dead_lettered": len(dead),
        "deploy_seconds": round(deploy_seconds, 1),
        "worker_hosts": len(
            {h for pool in rehearsal.pools for h in rehearsal.group(f"workers_{pool['name']}")}
        ),
    }
    out = ROOT / ".rehearsal" / rehearsal.env_name / "rolling-deploy.json"
    Path(out).write_text(json.dumps(figures, indent=2))
    print(f"\nrolling deploy figures: {json.dumps(figures)}")
    assert published, "the producer published nothing"
    assert finished_twice == [], f"not completed exactly once: {finished_twice[:10]}"
    assert started_twice == [], f"re-executed: {started_twice[:10]}"
    assert dead == []


def _dlq_list(rehearsal: Rehearsal) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "worker_app.cli", "dlq", "list", "--json", "--limit", "100000"],
        env=rehearsal.client_env(), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return proc.stdout
