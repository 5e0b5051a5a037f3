"""How the pages show times: UTC dates and ages ("5 min ago"); the JSON API keeps epoch
seconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Flask


def utc_time(epoch: float | None) -> str:
    """``2026-12-01 03:04:05 UTC`` for epoch seconds; empty for None."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(epoch: float | None) -> str:
    """ISO 8601 in UTC (a ``<time datetime>`` value); empty for None."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def age(epoch: float | None, now: float | None = None) -> str:
    """How long ago ``epoch`` was: ``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if epoch is None:
        return ""
    seconds = (time.time() if now is None else now) - epoch
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def install(app: Flask) -> None:
    """The filters ``utc``, ``iso`` and ``age`` for the templates."""
    app.jinja_env.filters.update(utc=utc_time, iso=iso_time, age=age)
