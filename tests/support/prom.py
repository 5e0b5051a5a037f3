"""Scrape a Prometheus endpoint and sum its samples."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> str:
    """The exposition text at ``url`` (loopback only)."""
    assert url.startswith("http://127.0.0.1:"), url
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback URL checked above
        return str(response.read().decode())


def total(text: str, sample: str, **labels: str) -> float:
    """Sum of ``sample`` over series whose labels include ``labels``."""
    result = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                result += s.value
    return result


def series(text: str, sample: str) -> list[tuple[dict[str, str], float]]:
    """Every (labels, value) of ``sample``."""
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample
    ]


# celery-exporter's names, kept for its dashboards although promtool frowns on their suffix.
CELERY_EXPORTER_NAMES = (
    "celery_active_consumer_count",
    "celery_active_process_count",
    "celery_active_worker_count",
)


def promtool_check(text: str) -> str:
    """Run ``promtool check metrics`` on ``text``; return its complaints (empty if clean),
    but for the ``_count`` suffix of celery-exporter's gauges (``CELERY_EXPORTER_NAMES``)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool is missing: apt-get install prometheus (.ci/run does)")
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    complaints = [
        line
        for line in (proc.stdout + proc.stderr).strip().splitlines()
        if not any(
            line.startswith(f"{name} non-histogram and non-summary metrics should not have")
            for name in CELERY_EXPORTER_NAMES
        )
    ]
    return "\n".join(complaints)
