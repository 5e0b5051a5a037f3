"""What the queues, workers and health pages and their API endpoints show, as JSON-ready data
read from the broker (``worker_app.broker_state``) and the workers' remote control
(``worker_app.worker_nodes``)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import redis

from worker_app.broker_state import read_broker
from worker_app.web.context import Console
from worker_app.worker_nodes import Node, live_nodes, pool_of_node

logger = logging.getLogger("worker_app.web")


class BrokerUnreachableError(Exception):
    """The broker's Redis did not answer."""


def _nodes(console: Console, *, stats: bool, active: bool) -> tuple[dict[str, Node], str | None]:
    """The live nodes, or none and why the remote control failed."""
    try:
        return live_nodes(console.celery_app, console.control_timeout, stats=stats,
                          active=active), None  # fmt: skip
    except Exception as error:  # the broker (the remote control's channel) failing
        logger.warning("remote control failed: %s", error)
        return {}, f"the workers' remote control failed: {type(error).__name__}: {error}"


def queues_report(console: Console) -> dict[str, Any]:
    """Per catalogue queue: waiting by priority step, unacked, scheduled, oldest wait and
    consumers (``BrokerUnreachableError`` when Redis does not answer)."""
    try:
        state = read_broker(console.broker, console.layout, oldest_wait=True)
    except redis.RedisError as error:
        raise BrokerUnreachableError(f"the broker's Redis did not answer: {error}") from None
    nodes, control_error = _nodes(console, stats=False, active=False)
    rows = []
    for queue in state.queues.values():
        pool = console.catalogue.pool_of_queue(queue.name)
        rows.append({
            "name": queue.name,
            "pool": pool.name if pool else None,
            "waiting": queue.waiting,
            "by_priority": {str(step): n for step, n in queue.by_priority.items()},
            "unacked": queue.unacked,
            "scheduled": queue.scheduled,
            "oldest_wait_seconds": queue.oldest_wait,
            "consumers": None if control_error else sum(
                queue.name in node.queues for node in nodes.values()
            ),
        })  # fmt: skip
    return {
        "queues": rows,
        "unacked_total": state.unacked_total,
        "unacked_scan_skipped": state.unacked_by_queue is None,
        "remote_control_error": control_error,
        "read_at": state.read_at,
    }


def workers_report(console: Console) -> dict[str, Any]:
    """The catalogue's pools with their live nodes (alive, pool size, active tasks), and any
    live node that serves none of them."""
    nodes, control_error = _nodes(console, stats=True, active=True)
    by_pool: dict[str, list[dict[str, Any]]] = {pool.name: [] for pool in console.catalogue.pools}
    others: list[dict[str, Any]] = []
    for node in nodes.values():
        row = {**asdict(node), "alive": True}
        pool = pool_of_node(console.catalogue, node)
        (by_pool[pool.name] if pool else others).append(row)
    pools = [
        {
            "name": pool.name,
            "queues": list(pool.queues),
            "concurrency": pool.concurrency,
            "autoscale": asdict(pool.autoscale) if pool.autoscale else None,
            "live": bool(by_pool[pool.name]),
            "nodes": by_pool[pool.name],
        }
        for pool in console.catalogue.pools
    ]
    return {"pools": pools, "other_nodes": others, "remote_control_error": control_error}


def health_report(console: Console) -> tuple[bool, dict[str, Any]]:
    """Whether the broker answers, every pool has a live node, and (when a limit is set) the
    dead letters of the last window stay under it; with each check's result."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        console.broker.ping()
        checks["broker"] = {"ok": True}
    except redis.RedisError as error:
        checks["broker"] = {"ok": False, "message": f"the broker's Redis did not answer: {error}"}
    if checks["broker"]["ok"]:
        nodes, control_error = _nodes(console, stats=False, active=False)
        live: dict[str, list[str]] = {pool.name: [] for pool in console.catalogue.pools}
        for node in nodes.values():
            pool = pool_of_node(console.catalogue, node)
            if pool is not None:
                live[pool.name].append(node.name)
        dead = [name for name, found in live.items() if not found]
        pools: dict[str, Any] = {"ok": not dead, "nodes": live}
        if dead:
            pools["message"] = control_error or f"no live node in pool {', '.join(dead)}"
        checks["pools"] = pools
    else:
        checks["pools"] = {"ok": False, "message": "not checked: the broker is unreachable"}
    checks["dlq_growth"] = _dlq_growth(console)
    failed = [name for name, check in checks.items() if not check["ok"]]
    return not failed, {"healthy": not failed, "failed": failed, "checks": checks}


def _dlq_growth(console: Console) -> dict[str, Any]:
    """Dead letters that failed within the window (a check only when a limit is set)."""
    window, limit = console.dlq_growth_window, console.dlq_growth_limit
    try:
        count = len(console.store.ids(failed_after=time.time() - window))
    except redis.RedisError as error:
        return {"ok": False, "message": f"the DLQ's Redis did not answer: {error}"}
    result: dict[str, Any] = {"ok": True, "window_seconds": window, "entries": count,
                              "limit": limit}  # fmt: skip
    if limit is not None and count > limit:
        result.update(ok=False, message=f"{count} dead letters in the last {window:g} s "
                                        f"(limit {limit})")  # fmt: skip
    return result
