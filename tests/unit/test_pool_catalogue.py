"""The pool catalogue: a team's own pools from one file, and one clear error for a bad one."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker_app.factory import load_and_check
from worker_app.pools import CatalogueError, load_catalogue, parse_catalogue
from worker_app.queues import celery_queues
from worker_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "worker_app" / "pools.yml").read_text())
REPORTS = {
    "name": "reports",
    "queues": ["reports", "exports"],
    "autoscale": {"min": 1, "max": 3},
    "max_tasks_per_child": 20,
    "max_memory_per_child_kb": 524288,
    "soft_time_limit": 600,
    "time_limit": 660,
    "metrics_port": 9815,
    "nodes": 2,
    "wait_slo_seconds": 60,
}


def with_pools(*changes: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default catalogue with ``extra`` added as a fifth pool and ``changes`` merged
    into the pools they name."""
    data = copy.deepcopy(DEFAULT)
    if extra:
        data["pools"].append(copy.deepcopy(extra))
    for change in changes:
        pool = next(p for p in data["pools"] if p["name"] == change["name"])
        pool.update(change)
    return data


def test_a_fifth_pool_is_one_more_entry() -> None:
    catalogue = parse_catalogue(with_pools(extra=REPORTS), "copy.yml")
    reports = catalogue.pool("reports")
    assert catalogue.names[-1] == "reports"
    assert catalogue.queue_names[-2:] == ("reports", "exports")
    assert catalogue.pool_of_queue("exports") == reports
    assert list(reports.metrics_ports) == [9815, 9816]
    argv = reports.worker_argv(hostname="reports-0@h")
    assert argv[argv.index("--queues") + 1] == "reports,exports"
    assert argv[argv.index("--autoscale") + 1] == "3,1"
    assert "--concurrency" not in argv
    assert reports.wait_slo_severity == "warning"
    assert [q.name for q in celery_queues(catalogue)][-2:] == ["reports", "exports"]


def test_the_catalogue_round_trips_through_its_json() -> None:
    catalogue = parse_catalogue(with_pools(extra=REPORTS))
    assert parse_catalogue(json.loads(json.dumps(catalogue.as_dict()))) == catalogue


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("duplicate pool", with_pools(extra={**REPORTS, "name": "high"}),
     "pool 'high': name: defined twice"),
    ("duplicate queue", with_pools(extra={**REPORTS, "queues": ["reports", "low"]}),
     "pool 'reports': queues: 'low' is already consumed by pool 'low'"),
    ("soft not below hard", with_pools({"name": "default", "soft_time_limit": 330}),
     "pool 'default': soft_time_limit (330) must be below time_limit (330)"),
    ("shared metrics port", with_pools(extra={**REPORTS, "metrics_port": 9813}),
     "pool 'reports': metrics_port: port 9813 is already used by pool 'default'"),
    ("node ports overlap the next pool", with_pools({"name": "critical", "nodes": 2}),
     "pool 'high': metrics_port: port 9812 is already used by pool 'critical'"),
    ("unknown field", with_pools({"name": "low", "max_memory_per_child": 1}),
     "pool 'low': unknown field max_memory_per_child"),
    ("unknown top-level key", {**DEFAULT, "pool": []}, "unknown key pool"),
    ("concurrency and autoscale", with_pools({"name": "low", "autoscale": {"min": 1, "max": 2}}),
     "pool 'low': set exactly one of concurrency and autoscale"),
    ("autoscale min above max", with_pools(extra={**REPORTS, "autoscale": {"min": 4, "max": 2}}),
     "pool 'reports': autoscale min must be an integer from 0 to max (2), got 4"),
    ("bad severity", with_pools({"name": "low", "wait_slo_severity": "page"}),
     "pool 'low': wait_slo_severity must be one of critical, warning"),
    ("missing SLO", with_pools(extra={k: v for k, v in REPORTS.items() if k != "wait_slo_seconds"}),
     "pool 'reports': missing field wait_slo_seconds"),
    ("string concurrency", with_pools({"name": "high", "concurrency": "4"}),
     "pool 'high': concurrency must be an integer, got '4'"),
    ("bad pool name", with_pools(extra={**REPORTS, "name": "Reports-1"}),
     "pools[4]: name must be a lower-case letter"),
    ("queue with the priority separator", with_pools(extra={**REPORTS, "queues": ["a:b"]}),
     "pool 'reports': queue name 'a:b'"),
    ("default queue not consumed", {**DEFAULT, "default_queue": "emails"},
     "default_queue: 'emails' is not a queue of any pool"),
]  # fmt: skip


@pytest.mark.bad_input
@pytest.mark.parametrize(("case", "data", "message"), BAD, ids=[case for case, _, _ in BAD])
def test_a_bad_catalogue_is_refused_naming_the_pool_and_field(
    case: str, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(CatalogueError) as excinfo:
        parse_catalogue(data, "team-pools.yml")
    assert str(excinfo.value).startswith("team-pools.yml: "), str(excinfo.value)
    assert message in str(excinfo.value)


@pytest.mark.bad_input
def test_a_time_limit_the_visibility_timeout_does_not_cover_is_a_warning_naming_the_pool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With consumer heartbeats the visibility timeout is a backstop: a longer time limit
    starts (warned), since only a worker without worker_app's transport would run it twice."""
    path = tmp_path / "pools.yml"
    path.write_text(yaml.safe_dump(with_pools(extra={**REPORTS, "time_limit": 7200})))
    settings = Settings.from_env({"WORKER_APP_POOLS_FILE": str(path)})
    with caplog.at_level("WARNING", logger="worker_app.configure"):
        assert load_and_check(settings).pool("reports").time_limit == 7200
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"{path}: pool 'reports': time_limit 7200s outlasts "
                                "WORKER_APP_VISIBILITY_TIMEOUT (3600s)")  # fmt: skip
    assert "keep the timeout above 7260s until every worker runs worker_app" in warned[0]
    proc = cli("pools", env={"WORKER_APP_POOLS_FILE": str(path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"warning: {warned[0]}"
    caplog.clear()
    with caplog.at_level("WARNING", logger="worker_app.configure"):
        load_and_check(dataclasses.replace(settings, visibility_timeout=7261))
    assert caplog.records == []


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "worker_app.cli", *args], input=stdin, capture_output=True,
        text=True, env={**os.environ, **(env or {})}, timeout=60, check=False,
    )  # fmt: skip


def test_worker_app_pools_prints_the_catalogue_in_effect(tmp_path: Path) -> None:
    path = tmp_path / "pools.yml"
    path.write_text(yaml.safe_dump(with_pools(extra=REPORTS)))
    table = cli("pools", env={"WORKER_APP_POOLS_FILE": str(path)})
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith(f"{path}: default queue default")
    assert any(line.startswith("reports ") for line in table.stdout.splitlines())
    shown = cli("pools", "--json", env={"WORKER_APP_POOLS_FILE": str(path)})
    assert [p["name"] for p in json.loads(shown.stdout)["pools"]][-1] == "reports"
    piped = cli("pools", "--file", "-", "--json", stdin=json.dumps(with_pools(extra=REPORTS)))
    assert json.loads(piped.stdout) == json.loads(shown.stdout)
    default = cli("pools", "--json", env={"WORKER_APP_POOLS_FILE": ""})
    assert json.loads(default.stdout) == load_catalogue().as_dict()


@pytest.mark.bad_input
@pytest.mark.parametrize("command", [("pools",), ("worker", "--pool", "low")])
def test_a_bad_catalogue_stops_the_cli_with_one_line(tmp_path: Path, command: tuple[str]) -> None:
    path = tmp_path / "pools.yml"
    path.write_text(yaml.safe_dump(with_pools({"name": "low", "soft_time_limit": 1900})))
    proc = cli(*command, env={"WORKER_APP_POOLS_FILE": str(path)})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        f"Error: {path}: pool 'low': soft_time_limit (1900) must be below time_limit (1860)"
    ], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.bad_input
def test_a_missing_or_unparsable_file_is_named(tmp_path: Path) -> None:
    missing = cli("pools", env={"WORKER_APP_POOLS_FILE": str(tmp_path / "nope.yml")})
    assert missing.returncode == 2
    assert f"{tmp_path / 'nope.yml'}: cannot read the pool catalogue" in missing.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("pools: [\n")
    proc = cli("pools", "--file", str(broken))
    assert proc.returncode == 2
    assert f"{broken}: not valid YAML" in proc.stderr
