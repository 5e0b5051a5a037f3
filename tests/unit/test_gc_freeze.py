"""A configured app's prefork worker freezes its start-up objects once, before the first fork
(Celery runs a full gc.collect() in the main process before every fork)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import gc, weakref
from celery import Celery, signals
from worker_app.configuration import configure
configure(Celery("probe"))
assert gc.get_freeze_count() == 0
signals.worker_before_create_process.send(sender=None)
frozen = gc.get_freeze_count()
assert frozen > 10000, frozen
signals.worker_before_create_process.send(sender=None)  # a replaced child: not again
assert gc.get_freeze_count() == frozen


class Cycle:
    pass


made = Cycle()
made.me = made
ref = weakref.ref(made)
del made
gc.collect()  # what Celery runs before each later fork still collects new garbage
assert ref() is None
print("ok")
"""


def test_the_first_fork_freezes_the_start_up_objects_once_and_later_garbage_is_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
