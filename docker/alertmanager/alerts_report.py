#!/usr/bin/env python3
"""`make alerts`: what the local stack's Alertmanager holds now, and what reached its receivers.

    alerts_report.py ALERTMANAGER_URL < alert-log's JSON lines

Standard library only (runs with the host's python3).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import Any


def describe(labels: dict[str, str], annotations: dict[str, str]) -> str:
    """`Name {label=value, ...}  summary` (alertname and severity are shown apart)."""
    rest = ", ".join(
        f"{key}={value}"
        for key, value in sorted(labels.items())
        if key not in ("alertname", "severity")
    )
    return f"{labels.get('alertname', '')} {{{rest}}}  {annotations.get('summary', '')}"


def held(url: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds (active, inhibited and silenced), oldest first."""
    if not url.startswith("http://127.0.0.1:"):
        raise SystemExit(f"alerts_report: expected the stack's loopback URL, got {url}")
    with urllib.request.urlopen(url + "/api/v2/alerts", timeout=10) as response:  # noqa: S310
        return sorted(json.load(response), key=lambda a: a["startsAt"])


def main(argv: list[str]) -> int:
    url = argv[1]
    print(f"In Alertmanager now ({url}):")
    try:
        alerts = held(url)
    except OSError as exc:
        alerts = []
        print(f"  cannot reach Alertmanager: {exc}")
    for alert in alerts:
        labels = alert["labels"]
        print(
            f"  {alert['startsAt'][:19]}  {alert['status']['state']:10} "
            f"{labels.get('severity', ''):8} {describe(labels, alert['annotations'])}"
        )
    if not alerts:
        print("  nothing")
    print()
    print("Delivered to the receivers (alert-log), oldest first:")
    delivered = [json.loads(line) for line in sys.stdin if line.strip()]
    for line in delivered:
        print(
            f"  {line['received_at'][:19]}  {line['status']:10} {line['receiver']:8} "
            f"{describe(line['labels'], line['annotations'])}"
        )
    if not delivered:
        print("  nothing yet")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
