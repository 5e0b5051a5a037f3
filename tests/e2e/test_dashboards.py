"""Every dashboard query and recording rule returns data from the live stack under load.

Template variables are substituted the way Grafana would with "All" selected.
A panel that may legitimately be empty in this run is listed in EXPECTED_EMPTY
with its reason; everything else must return at least one series.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, Stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$queue": ".*",
    "$task": ".*",
    "$instance": ".*",
}
# (dashboard uid, panel title) -> why it may be empty in the e2e run.
EXPECTED_EMPTY: dict[tuple[str, str], str] = {}
# The same with the Queue variable at `reports`, the stack's fifth pool (tests/e2e/conftest.py).
REPORTS_EMPTY: dict[tuple[str, str], str] = {
    ("celery-overview", "Retries and failures by task"): "the demo's reports tasks all succeed",
    ("celery-overview", "Dead-letter queue depth"): "no reports task dies",
    ("celery-overview", "Dead letters written (per 15 min) by reason"): "no reports task dies",
}


def dashboard_queries(queue: str = ".*") -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, PromQL with variables substituted) for every target."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                if queue != ".*" and "$queue" not in expr:
                    continue
                for var, value in {**SUBSTITUTIONS, "$queue": queue}.items():
                    expr = expr.replace(var, value)
                assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
                found.append((board["uid"], panel["title"], expr))
    return found


def recording_rules() -> list[tuple[str, str]]:
    """(record name, expression) of every recording rule."""
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [(r["record"], r["expr"]) for r in group["rules"] if "record" in r]
    return rules


def _query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    return stack.prom(re.sub(r"\s+", " ", expr))


@pytest.fixture(scope="module")
def loaded(stack: Stack, demo_run: str) -> Stack:
    """The stack after the demo load, once Prometheus has scraped it for a while."""
    wait_until(lambda: _query(stack, "queue_name:celery_task_queue_wait_seconds:p95_5m"),
               timeout=180, interval=2, what="recording rules evaluated")  # fmt: skip
    wait_until(lambda: _query(stack, "worker_app_idempotent_skips_total"),
               timeout=180, interval=2, what="the demo's idempotent skips scraped")  # fmt: skip
    return stack


QUERIES = dashboard_queries()
QUERY_IDS = [f"{uid}:{title}:{n}" for n, (uid, title, _) in enumerate(QUERIES)]


@pytest.mark.parametrize(("uid", "title", "expr"), QUERIES, ids=QUERY_IDS)
def test_dashboard_query_returns_data(loaded: Stack, uid: str, title: str, expr: str) -> None:
    if (uid, title) in EXPECTED_EMPTY:
        _query(loaded, expr)  # must still be a valid query (an error fails here)
        return
    result = wait_until(lambda: _query(loaded, expr), timeout=60, interval=2,
                        what=f"data for {uid} / {title}: {expr}")  # fmt: skip
    assert result


REPORTS_QUERIES = dashboard_queries("reports")


@pytest.mark.parametrize(
    ("uid", "title", "expr"),
    REPORTS_QUERIES,
    ids=[f"{uid}:{title}:{n}" for n, (uid, title, _) in enumerate(REPORTS_QUERIES)],
)
def test_dashboard_query_returns_data_for_the_fifth_pool(
    loaded: Stack, uid: str, title: str, expr: str
) -> None:
    """The dashboards follow the catalogue: the Queue variable at `reports` shows its data."""
    if (uid, title) in REPORTS_EMPTY:
        _query(loaded, expr)
        return
    result = wait_until(lambda: _query(loaded, expr), timeout=60, interval=2,
                        what=f"reports data for {uid} / {title}: {expr}")  # fmt: skip
    assert all(r["metric"].get("queue_name", "reports") == "reports" for r in result), result


def test_the_wait_alert_evaluates_for_the_fifth_pool(loaded: Stack) -> None:
    """CeleryQueueWaitSLOBreach's own expression, with its SLO scaled to 0 so that any wait
    exceeds it, yields the `reports` queue with its pool: the catalogue's SLO is joined in."""
    rules = [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "CeleryQueueWaitSLOBreach"
    ]
    (rule,) = rules
    # Fresh waits on reports, inside the 5-minute window of the p95 recording rule.
    for i in range(5):
        loaded.client_app().send_task("examples.record", args=[f"slo-{i}"], queue="reports")
    slo = "worker_app_queue_wait_slo_seconds{"
    assert slo in rule["expr"]
    expr = rule["expr"].replace(slo, "0 * " + slo)

    def reports() -> list[dict[str, Any]]:
        return [r for r in _query(loaded, expr) if r["metric"]["queue_name"] == "reports"]

    found = wait_until(reports, timeout=120, interval=2, what="the reports wait alert series")
    assert found[0]["metric"]["pool"] == "reports"
    status, body = loaded.http("STACK_PROMETHEUS_PORT", "/api/v1/rules?type=alert")
    assert status == 200
    health = {
        r["name"]: r["health"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]
    }
    assert health["CeleryQueueWaitSLOBreach"] == "ok", health


@pytest.mark.parametrize(
    ("record", "expr"), recording_rules(), ids=[r for r, _ in recording_rules()]
)
def test_recording_rule_evaluates_and_is_recorded(loaded: Stack, record: str, expr: str) -> None:
    assert wait_until(lambda: _query(loaded, expr), timeout=60, interval=2, what=expr)
    assert wait_until(lambda: _query(loaded, record), timeout=90, interval=2, what=record)


def test_prometheus_loaded_our_rules(loaded: Stack) -> None:
    status, body = loaded.http("STACK_PROMETHEUS_PORT", "/api/v1/rules")
    assert status == 200
    groups = {g["name"] for g in json.loads(body)["data"]["groups"]}
    expected = {g["name"] for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]}
    assert groups == expected


def test_dashboard_files_are_complete() -> None:
    assert {p.name for p in DASHBOARDS} == {"celery-overview.json", "celery-task.json"}
    for path in DASHBOARDS:
        assert Path(path).read_text().endswith("\n")
