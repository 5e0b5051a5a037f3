"""The live worker nodes as Celery's remote control reports them.

A node that answers within the timeout is alive; a node that does not answer is not known
(the remote control cannot list dead nodes). The first broadcast (``active_queues``) waits the
whole timeout and finds the nodes; the next ones wait only until those nodes have answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker_app.pools import Catalogue, Pool


@dataclass(frozen=True)
class ActiveTask:
    """A task a node is running now."""

    id: str
    name: str
    started: float | None  # when the worker started it (its clock)


@dataclass(frozen=True)
class Node:
    """One live worker node."""

    name: str
    queues: tuple[str, ...]  # the queues it consumes
    processes: int  # its pool size (concurrency); 0 when it did not say
    active: tuple[ActiveTask, ...] | None  # None when not asked


def pool_size(stats: dict[str, Any] | None) -> int:
    """The pool size in a node's ``stats`` reply (its processes, else its max concurrency)."""
    pool = (stats or {}).get("pool") or {}
    return len(pool.get("processes") or []) or int(pool.get("max-concurrency") or 0)


def live_nodes(
    app: Any, timeout: float, *, stats: bool = True, active: bool = False
) -> dict[str, Node]:
    """Every node answering within ``timeout``, by name (``stats`` asks for the pool sizes,
    ``active`` for the running tasks)."""
    queues = app.control.inspect(timeout=timeout).active_queues() or {}
    if not queues:
        return {}
    # The nodes are known now: the next broadcasts end as soon as each has answered.
    known = app.control.inspect(timeout=timeout, destination=list(queues), limit=len(queues))
    node_stats = (known.stats() or {}) if stats else {}
    running = (known.active() or {}) if active else {}
    nodes = {}
    for name, consumed in sorted(queues.items()):
        names = tuple(sorted({str(q.get("name")) for q in consumed or [] if q.get("name")}))
        tasks = None
        if active:
            tasks = tuple(
                ActiveTask(str(t.get("id")), str(t.get("name")), t.get("time_start"))
                for t in running.get(name) or []
            )
        nodes[name] = Node(name, names, pool_size(node_stats.get(name)), tasks)
    return nodes


def pool_of_node(catalogue: Catalogue, node: Node) -> Pool | None:
    """The catalogue pool ``node`` serves: the pool of a queue it consumes, else the pool its
    name starts with (``worker-app worker --pool NAME`` names nodes ``NAME@host``)."""
    for queue in node.queues:
        pool = catalogue.pool_of_queue(queue)
        if pool is not None:
            return pool
    prefix = node.name.partition("@")[0]
    return next((pool for pool in catalogue.pools if pool.name == prefix), None)
