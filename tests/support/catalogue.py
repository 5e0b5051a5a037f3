"""Pool catalogues for tests: the packaged one, and the packaged one plus a fifth pool."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ROOT / "worker_app" / "pools.yml"

# A team's fifth pool, as docs/pools.md adds it: its own queue, limits and wait SLO.
REPORTS: dict[str, Any] = {
    "name": "reports",
    "queues": ["reports"],
    "concurrency": 1,
    "max_tasks_per_child": 100,
    "max_memory_per_child_kb": 524288,
    "soft_time_limit": 600,
    "time_limit": 660,
    "metrics_port": 9815,
    "wait_slo_seconds": 60,
    "wait_slo_severity": "warning",
}


def packaged() -> dict[str, Any]:
    """The catalogue packaged with worker_app, as data."""
    return dict(yaml.safe_load(PACKAGED.read_text()))


def with_pool(pool: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """The packaged catalogue plus ``pool`` (default: REPORTS, with ``changes``)."""
    data = packaged()
    data["pools"].append({**copy.deepcopy(pool or REPORTS), **changes})
    return data


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
