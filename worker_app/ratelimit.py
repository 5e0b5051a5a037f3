"""A rate limit shared by every worker (Celery's own ``rate_limit`` is per worker).

GCRA (the generic cell rate algorithm) on one Redis key per limit: each call
moves a "theoretical arrival time" forward by ``period / rate``; a call that
would push it further than ``period`` ahead of now must wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

# ARGV: interval, burst window -> wait seconds (0 = allowed now)
_LUA_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - window
if wait > 0 then return tostring(wait) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""


@dataclass(frozen=True)
class Rate:
    """``count`` calls per ``period`` seconds."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse Celery's rate syntax: ``"10/s"``, ``"100/m"``, ``"1000/h"``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*([smh])\s*", text)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"rate must look like '10/s', '100/m' or '1000/h', got {text!r}")
        return cls(int(match.group(1)), _UNITS[match.group(2)])


class SharedRateLimit:
    """One named rate limit in Redis."""

    def __init__(
        self, client: redis.Redis, name: str, rate: Rate, prefix: str = "worker_app"
    ) -> None:
        self.key = f"{prefix}:ratelimit:{name}"
        self.rate = rate
        self._acquire = client.register_script(_LUA_ACQUIRE)

    def acquire(self) -> float:
        """Take one slot: 0.0 if granted now, else the seconds to wait (nothing taken)."""
        interval = self.rate.period / self.rate.count
        # A window of one period allows a burst of `count` calls, then one per interval.
        window = self.rate.period
        wait = self._acquire(keys=[self.key], args=[repr(interval), repr(window)])
        return float(wait.decode() if isinstance(wait, bytes) else wait)
