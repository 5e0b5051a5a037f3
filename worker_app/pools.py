"""Worker pool definitions: the one place that says which queues a pool
consumes and with which limits. ``worker-app worker --pool NAME`` reads it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


class UnknownPoolError(KeyError):
    """A pool name that is not defined."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown pool {self.name!r}; valid pools: {', '.join(POOLS)}"


@dataclass(frozen=True)
class Pool:
    """One priority pool of Celery workers."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    max_tasks_per_child: int
    max_memory_per_child_kb: int
    soft_time_limit: int
    time_limit: int
    metrics_port: int
    prefetch_multiplier: int = 1

    def __post_init__(self) -> None:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError(f"pool {self.name}: soft_time_limit must be below time_limit")

    def capped(self, max_time_limit: int | None) -> Pool:
        """This pool with its hard limit lowered to ``max_time_limit`` (and the soft
        limit below it) when the cap is lower; unchanged otherwise."""
        if max_time_limit is None or max_time_limit >= self.time_limit:
            return self
        soft = min(self.soft_time_limit, max_time_limit - max(1, max_time_limit // 10))
        return dataclasses.replace(self, time_limit=max_time_limit, soft_time_limit=soft)

    def worker_argv(self, concurrency: int | None = None, hostname: str | None = None) -> list[str]:
        """The ``celery worker`` arguments that run this pool."""
        return [
            "worker",
            "--queues", ",".join(self.queues),
            "--concurrency", str(concurrency or self.concurrency),
            "--max-tasks-per-child", str(self.max_tasks_per_child),
            "--max-memory-per-child", str(self.max_memory_per_child_kb),
            "--soft-time-limit", str(self.soft_time_limit),
            "--time-limit", str(self.time_limit),
            "--prefetch-multiplier", str(self.prefetch_multiplier),
            "--hostname", hostname or f"{self.name}@%h",
            "-O", "fair",
        ]  # fmt: skip


POOLS: dict[str, Pool] = {
    pool.name: pool
    for pool in (
        # User-facing, latency-bound work: fast limits, recycled often.
        Pool("critical", ("critical",), 4, 1000, 262_144, 30, 60, metrics_port=9811),
        Pool("high", ("high",), 4, 1000, 262_144, 120, 150, metrics_port=9812),
        Pool("default", ("default",), 4, 500, 393_216, 300, 330, metrics_port=9813),
        # Bulk and long-running work (LongRunningTask): few processes, long
        # limits, recycled after few tasks to return memory.
        Pool("low", ("low",), 2, 50, 786_432, 1800, 1860, metrics_port=9814),
    )
}


def get_pool(name: str) -> Pool:
    """The pool called ``name`` (``UnknownPoolError`` lists the valid names)."""
    try:
        return POOLS[name]
    except KeyError:
        raise UnknownPoolError(name) from None


def longest_time_limit(max_time_limit: int | None = None) -> int:
    """The longest hard time limit of any pool (under ``max_time_limit`` if given)."""
    return max(pool.capped(max_time_limit).time_limit for pool in POOLS.values())
