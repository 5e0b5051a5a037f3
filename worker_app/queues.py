"""Kombu queue declarations for the queues of the pool catalogue."""

from __future__ import annotations

from kombu import Exchange, Queue

from worker_app.pools import Catalogue


def celery_queues(catalogue: Catalogue) -> tuple[Queue, ...]:
    """One queue per catalogue queue, each on a direct exchange of the same name."""
    return tuple(
        Queue(name, Exchange(name, type="direct"), routing_key=name)
        for name in catalogue.queue_names
    )
