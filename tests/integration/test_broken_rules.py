"""A broken Prometheus rule stops `make rules` with promtool's own message.

`make rules` runs on a copy of `prometheus/` with one thing broken (PROMETHEUS_DIR points at the
copy). That the prometheus role refuses a broken rule on a host and keeps the running
configuration is proved by its molecule verifier
(roles/prometheus/molecule/default/tests/test_default.py,
test_a_broken_rule_fails_the_play_and_the_running_config_stays).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.bad_input

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of prometheus/ (rules and their unit tests)."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/run installs it)")
    target = tmp_path / "prometheus"
    shutil.copytree(ROOT / "prometheus", target)
    return target


def make_rules(directory: Path) -> tuple[int, str]:
    proc = subprocess.run(
        ["make", "--no-print-directory", "rules", f"PROMETHEUS_DIR={directory}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_the_unbroken_copy_passes(copy: Path) -> None:
    rc, output = make_rules(copy)
    assert rc == 0, output
    assert "FAILED" not in output


def test_an_expression_that_does_not_parse(copy: Path) -> None:
    (copy / "rules" / "zz-broken.yml").write_text(
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n"
        "        expr: rate(celery_task_failed_total[5m]\n"
    )
    rc, output = make_rules(copy)
    assert rc != 0, output
    assert (
        f'{copy}/rules/zz-broken.yml: 5:15: group "broken", rule 1, "Broken": could not parse '
        "expression: 1:34: parse error: unclosed left parenthesis"
    ) in output
    assert "Unit Testing" not in output, "make stopped at the check"


def test_a_misspelt_field(copy: Path) -> None:
    (copy / "rules" / "zz-typo.yml").write_text(
        "groups:\n  - name: typo\n    rules:\n      - alert: Typo\n        exprr: up == 0\n"
    )
    rc, output = make_rules(copy)
    assert rc != 0, output
    assert f"{copy}/rules/zz-typo.yml: yaml: unmarshal errors:" in output
    assert "line 5: field exprr not found in type rulefmt.RuleNode" in output


def test_an_alert_that_parses_but_no_longer_fires(copy: Path) -> None:
    path = copy / "rules" / "celery-alerts.yml"
    rules = yaml.safe_load(path.read_text())
    alert = next(rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule)
    alert["expr"] = "vector(0) > 1"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    rc, output = make_rules(copy)
    assert rc != 0, output
    assert f"Checking {path}\n  SUCCESS" in output, "it is valid PromQL"
    assert f"alertname: {alert['alert']}, time:" in output, output
    assert "got:[]" in output
