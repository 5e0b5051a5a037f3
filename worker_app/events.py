"""worker_app's own signals, for metrics and alerting hooks.

Connect a receiver like any Celery signal::

    from worker_app.events import task_dead_lettered

    @task_dead_lettered.connect
    def page_someone(sender, entry, **kwargs): ...
"""

from __future__ import annotations

from celery.utils.dispatch import Signal

#: An entry was written to the DLQ (``entry``: ``DeadLetter``; ``created``:
#: False when a redelivery rewrote an existing entry).
task_dead_lettered = Signal(name="task_dead_lettered")

#: An idempotent task was skipped (``key``, ``task_id``).
idempotent_skipped = Signal(name="idempotent_skipped")

#: A circuit breaker changed state (``breaker``, ``state``: closed/open/half_open).
breaker_state_changed = Signal(name="breaker_state_changed")

#: A task hit a time limit (``task_id``, ``hard``: bool).
time_limit_hit = Signal(name="time_limit_hit")

#: A consumer found it was silent past the grace period: its messages went back to their
#: queues while it held them (they may run twice). ``held``: how many it held.
consumer_cut_off = Signal(name="consumer_cut_off")
