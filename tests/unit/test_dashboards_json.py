"""The Grafana dashboards are well-formed dashboard JSON (schema version 39, Grafana 11)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_structure(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["schemaVersion"] == 39
    assert board["uid"] and board["title"]
    assert board["editable"] is False
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "queue", "task", "instance"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip()
            assert target["datasource"]["uid"] == "${datasource}"


def test_the_overview_covers_what_operators_ask_for() -> None:
    board = json.loads((ROOT / "grafana" / "dashboards" / "celery-overview.json").read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for metric in (
        "celery_task_started_total", "celery_task_succeeded_total", "celery_task_runtime_bucket",
        "worker_app_queue_length_by_priority", "queue_name:celery_task_queue_wait_seconds:p95_5m",
        "celery_worker_up", "celery_worker_tasks_active", "celery_task_retried_total",
        "celery_task_failed_total", "worker_app_dlq_entries",
        "worker_app_dlq_entries_written_total",
        "worker_app_task_peak_rss_bytes_bucket", "worker_app_circuit_breaker_state",
        "redis_memory_used_bytes", "redis_connected_clients",
    ):  # fmt: skip
        assert metric in exprs, metric


def test_provisioning_points_at_the_dashboards() -> None:
    import yaml  # noqa: PLC0415

    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/celery.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["uid"] == "prometheus"
    assert source["datasources"][0]["type"] == "prometheus"
