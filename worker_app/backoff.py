"""Retry delays: exponential backoff with full jitter, capped."""

from __future__ import annotations

import random


def backoff_ceiling(retries: int, base: float, maximum: float) -> float:
    """The largest delay for attempt ``retries`` (0-based): ``min(maximum, base * 2**retries)``."""
    if retries < 0:
        raise ValueError("retries must be >= 0")
    # Cap the exponent: 2**retries overflows float long before it matters.
    return float(min(maximum, base * 2.0 ** min(retries, 62)))


def full_jitter(
    retries: int, base: float, maximum: float, rng: random.Random | None = None
) -> float:
    """A delay drawn uniformly from ``[0, backoff_ceiling]`` ("full jitter",
    which spreads the retries of many failing tasks instead of synchronising them)."""
    ceiling = backoff_ceiling(retries, base, maximum)
    return (rng or random).uniform(0, ceiling)


def clamp_countdown(countdown: float | None, limit: float) -> float | None:
    """``countdown`` capped at ``limit`` (``None`` stays ``None``; negatives become 0)."""
    if countdown is None:
        return None
    return max(0.0, min(float(countdown), float(limit)))
