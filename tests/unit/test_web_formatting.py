"""How the console's pages show times."""

from __future__ import annotations

from datetime import UTC, datetime

from worker_app.web.formatting import age, iso_time, utc_time

AT = datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC).timestamp()


def test_times_are_shown_in_utc() -> None:
    assert utc_time(AT) == "2026-12-01 03:04:05 UTC"
    assert iso_time(AT) == "2026-12-01T03:04:05+00:00"
    assert utc_time(None) == iso_time(None) == age(None) == ""


def test_ages_use_the_largest_whole_unit() -> None:
    cases = {0: "0 s ago", 59.9: "59 s ago", 60: "1 min ago", 3599: "59 min ago",
             3600: "1 h ago", 86399: "23 h ago", 86400: "1 d ago", 20 * 86400: "20 d ago",
             -5: "in the future"}  # fmt: skip
    for seconds, shown in cases.items():
        assert age(AT, now=AT + seconds) == shown, seconds
