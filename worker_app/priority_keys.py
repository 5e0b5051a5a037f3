"""Move messages from the priority keys of worker_app 0.1 (``queue:3``) to Celery's default
separator (``queue\\x06\\x163``), where today's workers and stock producers meet.

Run when a worker starts, so a rolling upgrade strands nothing: a message an old producer
put on an old key is moved once the first new worker of its queue starts; the move is one
``LMOVE`` per message, atomic, so an old worker still reading the key loses nothing either.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

LEGACY_SEP = ":"


def migrate(client: redis.Redis, queues: Iterable[str], steps: Iterable[int], sep: str) -> int:
    """Move every message of the legacy priority keys of ``queues``; returns how many moved."""
    moved = 0
    for queue in queues:
        for step in steps:
            if not step:
                continue  # priority 0 is the bare queue name under either separator
            source, target = f"{queue}{LEGACY_SEP}{step}", f"{queue}{sep}{step}"
            while client.lmove(source, target, "LEFT", "RIGHT") is not None:
                moved += 1
    return moved
