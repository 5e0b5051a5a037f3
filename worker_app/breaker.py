"""A circuit breaker whose state lives in Redis, shared by every worker process.

closed -> open after ``fail_max`` consecutive failures; open -> half_open once
``reset_timeout`` has passed (one trial call is let through); the trial's
success closes the breaker, its failure opens it again. A trial that never
reports (its worker died) is replaced after ``trial_timeout``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import redis

# ARGV: now, reset_timeout, trial_timeout -> {allowed 0/1, state, wait seconds}
_LUA_ALLOW = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, 'closed', '0'} end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
  local due = opened + tonumber(ARGV[2])
  if now < due then return {0, 'open', tostring(due - now)} end
  local until_ = tostring(now + tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'trial_until', until_)
  return {1, 'half_open', '0'}
end
local trial_until = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0')
if now >= trial_until then
  redis.call('HSET', KEYS[1], 'trial_until', tostring(now + tonumber(ARGV[3])))
  return {1, 'half_open', '0'}
end
return {0, 'half_open', tostring(trial_until - now)}
"""

# ARGV: now, fail_max -> new state
_LUA_FAILURE = """
local now = ARGV[1]
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  return 'open'
end
if state == 'open' then return 'open' end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'failures', '0')
  return 'open'
end
return 'closed'
"""

# -> previous state
_LUA_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', '0')
return state
"""


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Decision:
    """Whether a call may go ahead now, and if not, how long to wait."""

    allowed: bool
    state: BreakerState
    wait: float


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CircuitBreaker:
    """One named breaker in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        fail_max: int = 5,
        reset_timeout: float = 60.0,
        trial_timeout: float | None = None,
        prefix: str = "worker_app",
    ) -> None:
        if fail_max < 1:
            raise ValueError("fail_max must be >= 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be > 0")
        self.client = client
        self.name = name
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.trial_timeout = trial_timeout if trial_timeout is not None else reset_timeout
        self.key = f"{prefix}:breaker:{name}"
        self._allow = client.register_script(_LUA_ALLOW)
        self._failure = client.register_script(_LUA_FAILURE)
        self._success = client.register_script(_LUA_SUCCESS)

    def _now(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def allow(self) -> Decision:
        """Ask to make a call (the Redis server's clock decides, not ours)."""
        allowed, state, wait = self._allow(
            keys=[self.key], args=[repr(self._now()), self.reset_timeout, self.trial_timeout]
        )
        return Decision(bool(allowed), BreakerState(_text(state)), float(_text(wait)))

    def record_failure(self) -> BreakerState:
        """Count a failed call; returns the state after it."""
        return BreakerState(
            _text(self._failure(keys=[self.key], args=[repr(self._now()), self.fail_max]))
        )

    def record_success(self) -> BreakerState:
        """Count a successful call (closes the breaker); returns the state before it."""
        return BreakerState(_text(self._success(keys=[self.key])))

    def state(self) -> BreakerState:
        """The stored state (an open breaker past its timeout still reads open)."""
        raw = self.client.hget(self.key, "state")
        return BreakerState(_text(raw)) if raw else BreakerState.CLOSED

    def reset(self) -> None:
        """Forget all state (closed)."""
        self.client.delete(self.key)
