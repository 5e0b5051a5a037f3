"""The four priority queues and the routing of tasks onto them."""

from __future__ import annotations

from kombu import Exchange, Queue

QUEUE_NAMES: tuple[str, ...] = ("critical", "high", "default", "low")
DEFAULT_QUEUE = "default"


def celery_queues() -> tuple[Queue, ...]:
    """Kombu queue declarations, one direct exchange per queue name."""
    return tuple(
        Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUE_NAMES
    )
