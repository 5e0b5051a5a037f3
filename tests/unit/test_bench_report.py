"""`make bench` rewrites only its own README section, and the README has one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bench import report

ROOT = Path(__file__).resolve().parents[2]


def _results() -> dict[str, Any]:
    return {
        "machine": {"when": "2026-11-22 12:00 UTC", "cpus": 2, "cpu_model": "CPU", "memory_gib": 24,
                    "os": "Debian 12", "python": "3.11.7", "redis": "7.0.15", "celery": "5.7.0"},
        "throughput": {"runs": 3, "stock_tasks_per_s": 620.0, "plain_tasks_per_s": 600.0,
                       "instrumented_tasks_per_s": 540.0, "ratio_plain_to_stock": 0.968,
                       "ratio_instrumented_to_stock": 0.871, "ratio_instrumented_to_plain": 0.9,
                       "redis_cpu_ms_per_1000": {"stock": 70.0, "plain": 90.0,
                                                 "instrumented": 91.0},
                       "redis_commands_per_task": {"stock": 9.0, "plain": 13.5,
                                                   "instrumented": 13.5}},
        "isolation": {"runs": 3, "critical_probes_per_run": 200, "low_backlog": 100_000,
                      "idle_p50_ms": 3.0, "idle_p99_ms": 5.0, "backlog_p50_ms": 3.1,
                      "backlog_p99_ms": 6.0, "ratio_p50_backlog_to_idle": 1.03,
                      "ratio_p99_backlog_to_idle": 1.2},
        "replay": {"runs": 3, "entries_per_run": 10000, "replays_per_s": 700.0,
                   "deletes_per_s": 9000.0},
        "exporter": {"queued": 100_000, "scrape_ms_p50": 1.5, "scrape_ms_max": 5.0},
        "converge": {"inventory": "production", "hosts": 8, "converge_s": 199,
                     "idempotent_s": [150, 147, 149], "idempotent_median_s": 149},
    }  # fmt: skip


def test_update_readme_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{report.BEGIN}\nold figures\n{report.END}\n\nafter\n")
    assert report.update_readme(_results(), readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old figures" not in text
    assert (
        "| (a) **plain ÷ stock, instrumented ÷ stock** (instrumented ÷ plain) | **0.968, 0.871** "
        "(0.9) |" in text
    )
    assert (
        "| (a) Redis CPU per 1,000 tasks: stock / plain / instrumented | 70.0 / 90.0 / 91.0 ms |"
        in text
    )
    assert (
        "| (a) one Redis core's ceiling at that cost (1 s ÷ CPU per task; README: Capacity): "
        "stock / plain / instrumented | 14,300 / 11,100 / 11,000 tasks/s |" in text
    )
    assert "| (e) `site.yml` first converge, production inventory on 8 containers | 199 s |" in text
    assert "| (e) `site.yml` idempotent re-run, `changed=0` (median of 3) | 149 s |" in text
    assert text.count(report.BEGIN) == text.count(report.END) == 1


def test_update_readme_without_markers_changes_nothing(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    assert not report.update_readme(_results(), readme)
    assert readme.read_text() == "# Title\n"


def test_the_repository_readme_has_the_bench_section() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
