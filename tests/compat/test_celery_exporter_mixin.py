"""celery-exporter's own dashboards and alerts (its celery-mixin), unchanged, on the bundle.

``MIXIN_DIR`` holds the mixin's rendered files (``celery-tasks-overview.json``,
``celery-tasks-by-task.json``, ``celery-tasks.json``, ``prometheus_alerts.yaml``): an outside
oracle, read here and never copied into this repository. ``make compat MIXIN_DIR=...`` runs
this module on the end-to-end stack (``make up`` in its own project):

- the load: the demo twice (so that, as on a stack that has run for a while, the counters exist
  before they grow), a revoked task and a message the workers must reject (pickle);
- every panel query of the three dashboards, its template variables resolved against the live
  Prometheus the way Grafana would with every selectable variable at "All", returns data (a
  finite value) over the last 15 minutes;
- the three alerts' metrics are there under their ``job=~".*celery.*"`` selector, and
  ``CeleryWorkerDown``'s expression names a worker within two minutes of its stop.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

if not os.environ.get("MIXIN_DIR"):
    raise pytest.UsageError(
        "MIXIN_DIR must name a directory with celery-mixin's rendered dashboards and alerts "
        "(make compat MIXIN_DIR=...)"
    )
MIXIN_DIR = Path(os.environ["MIXIN_DIR"])
DASHBOARDS = ("celery-tasks-overview.json", "celery-tasks-by-task.json", "celery-tasks.json")
ALERTS = MIXIN_DIR / "prometheus_alerts.yaml"
for _name in (*DASHBOARDS, ALERTS.name):
    if not (MIXIN_DIR / _name).is_file():
        raise pytest.UsageError(f"MIXIN_DIR={MIXIN_DIR}: {_name} is missing")

# Grafana's built-in variables for a 15-minute range at a 15 s step (its $__rate_interval:
# four scrape intervals of the datasource's default 15 s).
WINDOW_SECONDS, STEP_SECONDS = 900, 15
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "15m"}
# The worker the alert test stops: the `low` pool's container, and its Celery node name.
STOPPED_SERVICE, STOPPED_NODE = "worker-low", "low@worker-low"


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from _panels(item.get("panels", []))


def panel_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, raw expression) of every target of the three dashboards."""
    found = []
    for name in DASHBOARDS:
        board = json.loads((MIXIN_DIR / name).read_text())
        panels = list(_panels(board.get("panels", [])))
        panels += [p for row in board.get("rows", []) for p in _panels(row.get("panels", []))]
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr", "").strip():
                    found.append((name, str(panel.get("title")), str(target["expr"])))
    return found


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's ``$name`` / ``${name}`` interpolation, longest names first."""
    for name in sorted(values, key=len, reverse=True):
        text = text.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return text


def _get(stack: Stack, path: str, **params: Any) -> Any:
    status, body = stack.http(
        "STACK_PROMETHEUS_PORT", f"{path}?{urllib.parse.urlencode(params, doseq=True)}"
    )
    assert status == 200, body
    return json.loads(body)["data"]


def resolve_variables(stack: Stack, board_name: str) -> dict[str, str]:
    """Each query variable of the dashboard, as Grafana fills it: ``label_values(selector,
    label)`` from the live Prometheus; "All" (or every value of a multi-value variable) as
    the regex of all values; a single-value variable at its first value; none found: ""."""
    board = json.loads((MIXIN_DIR / board_name).read_text())
    values = dict(BUILTINS)
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", substitute(query, values).strip())
        assert match, f"{board_name}: variable {var['name']}: {query}"
        selector, label = match.groups()
        now = time.time()
        series = _get(stack, "/api/v1/series", **{"match[]": selector}, start=now - 3600, end=now)
        found = sorted({s[label] for s in series if label in s})
        if var.get("includeAll") or var.get("multi"):
            # Regex-escaped, then escaped again for the PromQL string, as Grafana does.
            escaped = [re.escape(v).replace("\\", "\\\\") for v in found]
            regex = "(" + "|".join(escaped) + ")" if found else ""
            values[var["name"]] = var.get("allValue") or regex
        else:
            values[var["name"]] = found[0] if found else ""
    return values


def has_data(stack: Stack, expr: str) -> bool:
    """Whether the range query of the last 15 minutes has at least one finite value."""
    end = time.time()
    data = _get(stack, "/api/v1/query_range", query=expr, start=end - WINDOW_SECONDS, end=end,
                step=STEP_SECONDS)  # fmt: skip
    return any(
        math.isfinite(float(value)) for series in data["result"] for _t, value in series["values"]
    )


def alert_rules() -> dict[str, str]:
    """The mixin's alerts: name -> expression."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


@pytest.fixture(scope="module")
def loaded(stack: Stack) -> Stack:
    """The stack after the load, every event kind scraped."""
    stack.run("demo", "--count", "5")
    # The first run's failures exist as series (at their first count) before the second run
    # adds to them: increase() sees growth, not a series' birth.
    wait_until(lambda: stack.prom('celery_task_failed_total{exception!=""}'), timeout=180,
               interval=2, what="the first run's failures scraped")  # fmt: skip
    time.sleep(20)  # two more scrapes of every counter at its first value
    stack.run("demo", "--count", "5")
    app = stack.client_app()
    revoked = app.send_task("examples.record", args=["compat-revoked"], queue="default",
                            countdown=5)  # fmt: skip
    app.control.revoke(revoked.id)
    # A producer configured for pickle: the workers accept JSON only, so they reject it.
    app.send_task("examples.record", args=["compat-pickled"], queue="default", serializer="pickle")
    for outcome in ("revoked", "rejected", "failed", "retried"):
        wait_until(
            lambda outcome=outcome: stack.prom(
                f"sum(increase(celery_task_{outcome}_total[10m])) > 0"
            ),
            timeout=180, interval=2, what=f"a {outcome} task in Prometheus",
        )  # fmt: skip
    return stack


TARGETS = panel_targets()


def test_the_mixin_files_hold_the_queries_we_expect() -> None:
    """A guard on the oracle itself: three dashboards, every panel query found."""
    assert len(TARGETS) >= 90, len(TARGETS)
    assert set(alert_rules()) == {"CeleryTaskHighFailRate", "CeleryHighQueueLength",
                                  "CeleryWorkerDown"}  # fmt: skip


@pytest.mark.parametrize(
    ("board", "title", "expr"),
    TARGETS,
    ids=[f"{b.removesuffix('.json')}:{t}:{n}" for n, (b, t, _e) in enumerate(TARGETS)],
)
def test_every_panel_query_returns_data(loaded: Stack, board: str, title: str, expr: str) -> None:
    values = resolve_variables(loaded, board)
    assert values.get("job", "celery") == "celery", values  # the one Celery job label
    query = substitute(expr, values)
    assert "$" not in query, f"unresolved variable in {title}: {query}"
    assert wait_until(lambda: has_data(loaded, query), timeout=60, interval=3,
                      what=f"data for {board} / {title}: {query}")  # fmt: skip


def test_the_alerts_metrics_are_there(loaded: Stack) -> None:
    rules = alert_rules()
    for name, expr in rules.items():
        for metric in set(re.findall(r"\b(celery_\w+)\s*\{", expr)):
            assert loaded.prom(f'{metric}{{job=~".*celery.*"}}'), f"{name}: {metric}"
    # The demo's failures are well over 5 %: the fail-rate alert's expression yields them.
    assert wait_until(lambda: loaded.prom(rules["CeleryTaskHighFailRate"]), timeout=60,
                      interval=3, what="CeleryTaskHighFailRate's series")  # fmt: skip


def test_celery_worker_down_names_a_stopped_worker_within_two_minutes(loaded: Stack) -> None:
    expr = alert_rules()["CeleryWorkerDown"]
    wait_until(lambda: loaded.prom(f'celery_worker_up{{node="{STOPPED_NODE}"}} == 1'),
               timeout=60, interval=2, what=f"{STOPPED_NODE} up")  # fmt: skip
    assert not [r for r in loaded.prom(expr) if r["metric"].get("node") == STOPPED_NODE]
    stopped = time.monotonic()
    loaded.run("compose", "stop", STOPPED_SERVICE)

    def down() -> list[dict[str, Any]]:
        return [r for r in loaded.prom(expr) if r["metric"].get("node") == STOPPED_NODE]

    (series,) = wait_until(down, timeout=120, interval=2, what=f"CeleryWorkerDown: {STOPPED_NODE}")
    print(f"CeleryWorkerDown named {STOPPED_NODE} {time.monotonic() - stopped:.0f} s after stop")
    assert series["metric"]["hostname"] == STOPPED_SERVICE  # the host part, as celery-exporter's
