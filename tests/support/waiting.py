"""Polling helpers (the tests wait for real processes, never for fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], timeout: float = 30, interval: float = 0.1, what: str = ""
) -> T:
    """Call ``check`` until it returns something truthy; return that, or fail."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)
        last = check()
    return last
