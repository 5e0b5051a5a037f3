"""Idempotency: a task run whose key already completed is skipped.

A key in Redis moves through ``running:<task id>`` (claimed, with a TTL longer
than the task may run) to ``done`` (with the dedup TTL). A run whose claim
fails because another task id holds it is told to wait; a redelivery of the
same task id (the worker died mid-run) may continue its own claim.
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any

import redis

# ARGV: task id, running ttl -> 'claimed' | 'done' | 'busy'
_LUA_CLAIM = """
local mine = 'running:' .. ARGV[1]
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], mine, 'EX', ARGV[2])
  return 'claimed'
end
if current == 'done' then return 'done' end
if current == mine then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 'claimed'
end
return 'busy'
"""

# ARGV: task id -> 1 if our claim was released
_LUA_RELEASE = """
if redis.call('GET', KEYS[1]) == 'running:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# ARGV: task id, done ttl
_LUA_COMPLETE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= 'running:' .. ARGV[1] and current ~= 'done' then return 0 end
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
return 1
"""


class Claim(enum.Enum):
    """Outcome of claiming an idempotency key."""

    CLAIMED = "claimed"  # run the task
    DONE = "done"  # already completed: skip
    BUSY = "busy"  # another task id is running it now: try later


def default_key(task_name: str, args: Any, kwargs: Any) -> str:
    """The key of a call: the task name and a digest of its JSON arguments."""
    payload = json.dumps([args, kwargs], sort_keys=True, separators=(",", ":"), default=repr)
    return f"{task_name}:{hashlib.sha256(payload.encode()).hexdigest()}"


class IdempotencyGuard:
    """Claim, complete and release idempotency keys in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "worker_app") -> None:
        self.client = client
        self.prefix = f"{prefix}:idem:"
        self._claim = client.register_script(_LUA_CLAIM)
        self._release = client.register_script(_LUA_RELEASE)
        self._complete = client.register_script(_LUA_COMPLETE)

    def claim(self, key: str, task_id: str, running_ttl: int) -> Claim:
        """Try to become the run of ``key``."""
        result = self._claim(keys=[self.prefix + key], args=[task_id, running_ttl])
        return Claim(result.decode() if isinstance(result, bytes) else result)

    def complete(self, key: str, task_id: str, done_ttl: int) -> bool:
        """Mark ``key`` done (duplicates published within ``done_ttl`` are skipped)."""
        return bool(self._complete(keys=[self.prefix + key], args=[task_id, done_ttl]))

    def release(self, key: str, task_id: str) -> bool:
        """Drop our claim after a failure, so a retry or replay may run."""
        return bool(self._release(keys=[self.prefix + key], args=[task_id]))
