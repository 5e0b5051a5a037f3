"""The pool catalogue: which pools of workers exist, the queues each consumes, its limits.

The catalogue is data (``worker_app/pools.yml``, or the file ``WORKER_APP_POOLS_FILE`` names);
everything else reads it: routing, ``worker-app worker --pool``, the exporter, the playbooks,
``make up`` and the alert rules (through the exporter's SLO series).

Validation is written here rather than with a schema library: the rules that matter are
cross-field and cross-pool (soft below hard, one owner per queue and metrics port) and each
error must name the pool and the field, which a generic schema error does not; the per-field
checks are a small table.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from worker_app.settings import SettingsError

DEFAULT_FILE = "pools.yml"
SEVERITIES = ("critical", "warning")
_POOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# A Redis key part: no priority separator or whitespace.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class CatalogueError(SettingsError):
    """The catalogue cannot be used; the message names the pool and the field."""


class UnknownPoolError(KeyError):
    """A pool name that the catalogue does not define."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown pool {self.name!r}; valid pools: {', '.join(self.known)}"


@dataclass(frozen=True)
class Autoscale:
    """Celery's ``--autoscale``: between ``min`` and ``max`` processes."""

    min: int
    max: int


@dataclass(frozen=True)
class Pool:
    """One pool of Celery workers."""

    name: str
    queues: tuple[str, ...]
    max_tasks_per_child: int
    max_memory_per_child_kb: int
    soft_time_limit: int
    time_limit: int
    metrics_port: int
    wait_slo_seconds: float
    concurrency: int | None = None
    autoscale: Autoscale | None = None
    prefetch_multiplier: int = 1
    nodes: int = 1
    wait_slo_severity: str = "warning"

    @property
    def metrics_ports(self) -> range:
        """The metrics ports of this pool's nodes on one host."""
        return range(self.metrics_port, self.metrics_port + self.nodes)

    def capped(self, max_time_limit: int | None) -> Pool:
        """This pool with its hard limit lowered to ``max_time_limit`` (and the soft
        limit below it) when the cap is lower; unchanged otherwise."""
        if max_time_limit is None or max_time_limit >= self.time_limit:
            return self
        soft = min(self.soft_time_limit, max_time_limit - max(1, max_time_limit // 10))
        return dataclasses.replace(self, time_limit=max_time_limit, soft_time_limit=soft)

    def worker_argv(self, concurrency: int | None = None, hostname: str | None = None) -> list[str]:
        """The ``celery worker`` arguments that run this pool."""
        if concurrency is not None:
            processes = ["--concurrency", str(concurrency)]
        elif self.autoscale is not None:
            processes = ["--autoscale", f"{self.autoscale.max},{self.autoscale.min}"]
        else:
            processes = ["--concurrency", str(self.concurrency)]
        return [
            "worker",
            "--queues", ",".join(self.queues),
            *processes,
            "--max-tasks-per-child", str(self.max_tasks_per_child),
            "--max-memory-per-child", str(self.max_memory_per_child_kb),
            "--soft-time-limit", str(self.soft_time_limit),
            "--time-limit", str(self.time_limit),
            "--prefetch-multiplier", str(self.prefetch_multiplier),
            "--hostname", hostname or f"{self.name}@%h",
            "-O", "fair",
        ]  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The pool as catalogue data (what ``worker-app pools --json`` prints)."""
        data = dataclasses.asdict(self)
        data["queues"] = list(self.queues)
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True)
class Catalogue:
    """Every pool, and where unrouted tasks and Beat's housekeeping go."""

    pools: tuple[Pool, ...]
    default_queue: str
    maintenance_queue: str
    source: str = DEFAULT_FILE

    @property
    def names(self) -> tuple[str, ...]:
        """The pool names, in catalogue order."""
        return tuple(pool.name for pool in self.pools)

    @property
    def queue_names(self) -> tuple[str, ...]:
        """Every queue some pool consumes, in catalogue order."""
        return tuple(queue for pool in self.pools for queue in pool.queues)

    def pool(self, name: str) -> Pool:
        """The pool called ``name`` (``UnknownPoolError`` lists the valid names)."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise UnknownPoolError(name, self.names)

    def pool_of_queue(self, queue: str) -> Pool | None:
        """The pool that consumes ``queue``, if any."""
        return next((pool for pool in self.pools if queue in pool.queues), None)

    def capped(self, max_time_limit: int | None) -> Catalogue:
        """The catalogue with every pool under ``max_time_limit``."""
        pools = tuple(pool.capped(max_time_limit) for pool in self.pools)
        return dataclasses.replace(self, pools=pools)

    def longest_time_limit(self, max_time_limit: int | None = None) -> int:
        """The longest hard time limit of any pool (under ``max_time_limit`` if given)."""
        return max(pool.capped(max_time_limit).time_limit for pool in self.pools)

    def visibility_timeout_shortfalls(
        self, visibility_timeout: int, max_time_limit: int | None
    ) -> list[str]:
        """Pools whose hard limit (capped) plus 60 s reaches the visibility timeout, each as a
        line naming the pool. Harmless while every consumer runs worker_app's transport (its
        heartbeats keep a live consumer's messages from the timeout); a worker without it
        (stock Celery, during a rolling upgrade) would have such a task delivered twice."""
        lines = []
        for pool in self.pools:
            limit = pool.capped(max_time_limit).time_limit
            if visibility_timeout <= limit + 60:
                cap = f" (capped by WORKER_APP_MAX_TIME_LIMIT={max_time_limit})" if (
                    max_time_limit and max_time_limit < pool.time_limit
                ) else ""  # fmt: skip
                lines.append(
                    f"{self.source}: pool {pool.name!r}: time_limit {limit}s{cap} outlasts "
                    f"WORKER_APP_VISIBILITY_TIMEOUT ({visibility_timeout}s) - 60s: safe while "
                    "every worker on this broker runs worker_app's transport (consumer "
                    "heartbeats), but a worker without it (stock Celery, a rolling upgrade) "
                    f"would run such a task twice; keep the timeout above {limit + 60}s until "
                    "every worker runs worker_app"
                )
        return lines

    def as_dict(self) -> dict[str, Any]:
        """The catalogue as data (the file format)."""
        return {
            "default_queue": self.default_queue,
            "maintenance_queue": self.maintenance_queue,
            "pools": [pool.as_dict() for pool in self.pools],
        }


# --- parsing --------------------------------------------------------------------------------

_REQUIRED = (
    "name",
    "queues",
    "max_tasks_per_child",
    "max_memory_per_child_kb",
    "soft_time_limit",
    "time_limit",
    "metrics_port",
    "wait_slo_seconds",
)
_POOL_KEYS = frozenset(f.name for f in dataclasses.fields(Pool))
_TOP_KEYS = frozenset({"default_queue", "maintenance_queue", "pools"})
# field -> (smallest, largest) for the integer fields
_INT_RANGES: dict[str, tuple[int, int]] = {
    "concurrency": (1, 1024),
    "max_tasks_per_child": (1, 10**9),
    "max_memory_per_child_kb": (1024, 10**9),
    "soft_time_limit": (1, 7 * 86400),
    "time_limit": (1, 7 * 86400),
    "prefetch_multiplier": (1, 1000),
    "metrics_port": (1024, 65535),
    "nodes": (1, 64),
    "autoscale max": (1, 1024),
}


def _int(where: str, field: str, value: Any) -> int:
    low, high = _INT_RANGES[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogueError(f"{where}: {field} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise CatalogueError(f"{where}: {field} must be between {low} and {high}, got {value}")
    return value


def _autoscale(where: str, value: Any) -> Autoscale:
    if not isinstance(value, Mapping) or set(value) != {"min", "max"}:
        raise CatalogueError(f"{where}: autoscale must be {{min: N, max: M}}, got {value!r}")
    high = _int(where, "autoscale max", value["max"])
    low = value["min"]
    if isinstance(low, bool) or not isinstance(low, int) or not 0 <= low <= high:
        raise CatalogueError(
            f"{where}: autoscale min must be an integer from 0 to max ({high}), got {low!r}"
        )
    return Autoscale(min=low, max=high)


def _queues(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list) or not value:
        raise CatalogueError(f"{where}: queues must be a non-empty list of names, got {value!r}")
    for queue in value:
        if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
            raise CatalogueError(
                f"{where}: queue name {queue!r} must be 1-100 letters, digits, '.', '_' or '-'"
            )
    if len(set(value)) != len(value):
        raise CatalogueError(f"{where}: queues lists a queue twice: {value}")
    return tuple(value)


def _pool(index: int, raw: Any) -> Pool:
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"pools[{index}] must be a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not _POOL_NAME.match(name):
        raise CatalogueError(
            f"pools[{index}]: name must be a lower-case letter then up to 39 letters, digits "
            f"or '_' (it names host groups and programs), got {name!r}"
        )
    where = f"pool {name!r}"
    unknown = sorted(set(raw) - _POOL_KEYS)
    if unknown:
        raise CatalogueError(
            f"{where}: unknown field {', '.join(unknown)} (known: {', '.join(sorted(_POOL_KEYS))})"
        )
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise CatalogueError(f"{where}: missing field {', '.join(missing)}")
    values: dict[str, Any] = {"name": name, "queues": _queues(where, raw["queues"])}
    for field in _INT_RANGES:
        if field in raw:
            values[field] = _int(where, field, raw[field])
    if ("concurrency" in raw) == ("autoscale" in raw):
        raise CatalogueError(f"{where}: set exactly one of concurrency and autoscale")
    if "autoscale" in raw:
        values["autoscale"] = _autoscale(where, raw["autoscale"])
    slo = raw["wait_slo_seconds"]
    if isinstance(slo, bool) or not isinstance(slo, int | float) or not slo > 0:
        raise CatalogueError(f"{where}: wait_slo_seconds must be a positive number, got {slo!r}")
    values["wait_slo_seconds"] = slo
    severity = raw.get("wait_slo_severity", "warning")
    if severity not in SEVERITIES:
        raise CatalogueError(
            f"{where}: wait_slo_severity must be one of {', '.join(SEVERITIES)}, got {severity!r}"
        )
    values["wait_slo_severity"] = severity
    if values["soft_time_limit"] >= values["time_limit"]:
        raise CatalogueError(
            f"{where}: soft_time_limit ({values['soft_time_limit']}) must be below "
            f"time_limit ({values['time_limit']})"
        )
    return Pool(**values)


def _check_across_pools(pools: list[Pool]) -> None:
    seen_names: set[str] = set()
    queue_owner: dict[str, str] = {}
    port_owner: dict[int, str] = {}
    for pool in pools:
        if pool.name in seen_names:
            raise CatalogueError(f"pool {pool.name!r}: name: defined twice")
        seen_names.add(pool.name)
        for queue in pool.queues:
            if queue in queue_owner:
                raise CatalogueError(
                    f"pool {pool.name!r}: queues: {queue!r} is already consumed by pool "
                    f"{queue_owner[queue]!r} (one pool per queue)"
                )
            queue_owner[queue] = pool.name
        for port in pool.metrics_ports:
            if port in port_owner:
                raise CatalogueError(
                    f"pool {pool.name!r}: metrics_port: port {port} is already used by pool "
                    f"{port_owner[port]!r} (pools may share a host; each node has its own port)"
                )
            port_owner[port] = pool.name


def parse_catalogue(data: Any, source: str = "catalogue") -> Catalogue:
    """A validated catalogue from loaded YAML/JSON data; ``CatalogueError`` names the
    pool and the field (prefixed with ``source``) when something is wrong."""
    try:
        if not isinstance(data, Mapping):
            raise CatalogueError(f"must be a mapping with a 'pools' list, got {data!r}")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise CatalogueError(
                f"unknown key {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})"
            )
        raw_pools = data.get("pools")
        if not isinstance(raw_pools, list) or not raw_pools:
            raise CatalogueError("pools must be a non-empty list")
        pools = [_pool(index, raw) for index, raw in enumerate(raw_pools)]
        _check_across_pools(pools)
        queues = [queue for pool in pools for queue in pool.queues]
        default_queue = data.get("default_queue", queues[0])
        maintenance_queue = data.get("maintenance_queue", default_queue)
        for key, queue in (
            ("default_queue", default_queue),
            ("maintenance_queue", maintenance_queue),
        ):
            if queue not in queues:
                raise CatalogueError(
                    f"{key}: {queue!r} is not a queue of any pool (queues: {', '.join(queues)})"
                )
    except CatalogueError as exc:
        raise CatalogueError(f"{source}: {exc}") from None
    return Catalogue(tuple(pools), default_queue, maintenance_queue, source)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """The catalogue in ``path`` (``-`` for standard input), or the package's default."""
    if path is None or str(path) == "":
        text = resources.files("worker_app").joinpath(DEFAULT_FILE).read_text(encoding="utf-8")
        source = f"worker_app/{DEFAULT_FILE}"
    elif str(path) == "-":
        import sys  # noqa: PLC0415

        text, source = sys.stdin.read(), "<stdin>"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogueError(
                f"{source}: cannot read the pool catalogue: {exc.strerror}"
            ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CatalogueError(f"{source}: not valid YAML{where}: {problem}") from None
    return parse_catalogue(data, source)
