"""The dead-letter store on Redis.

Keys (under ``<prefix>:dlq:``):

- ``entries`` hash: entry id -> entry JSON;
- ``index`` sorted set: entry id scored by ``failed_at`` (oldest first);
- ``counts`` hash: ``<queue>\\x1f<task>`` -> number of entries (for stats and
  the exporter without reading every entry);
- ``summary`` hash: entry id -> ``<queue>\\x1f<task>\\x1f<reason>\\x1f<exception class>``,
  what a filtered listing reads instead of every entry (``worker_app.dlq.query``). Entries
  written before it existed have none until ``backfill_summaries`` adds them.

Every change runs as one Lua script, so the three keys never disagree and the
caps (count and age) are enforced atomically on each write.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from worker_app.dlq.entry import DeadLetter, EntryFormatError

FIELD_SEP = "\x1f"

# Shared Lua: decrement the counts field of a stored entry and delete it.
_LUA_DROP = """
local function field_of(raw)
  local ok, e = pcall(cjson.decode, raw)
  if not ok then return nil end
  local q = e['queue']; local t = e['task_name']
  if type(q) ~= 'string' then q = '' end
  if type(t) ~= 'string' then t = '' end
  return q .. '\\31' .. t
end
local function drop_counted(id, f)
  if f then
    if redis.call('HINCRBY', KEYS[3], f, -1) <= 0 then redis.call('HDEL', KEYS[3], f) end
  end
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[4], id)
end
local function drop(id)
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    drop_counted(id, field_of(raw))
  else
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[4], id)
  end
end
local function trim(min_score, max_count)
  local removed = 0
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. min_score)
  for _, id in ipairs(old) do drop(id); removed = removed + 1 end
  local excess = redis.call('ZCARD', KEYS[2]) - max_count
  if excess > 0 then
    local ids = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
    for _, id in ipairs(ids) do drop(id); removed = removed + 1 end
  end
  return removed
end
"""

# ARGV: id, json, failed_at, min_score, max_count, summary -> {created (0/1), trimmed}
_LUA_ADD = (
    _LUA_DROP
    + """
local created = 1
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then created = 0; drop(ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], field_of(ARGV[2]), 1)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
local trimmed = trim(tonumber(ARGV[4]), tonumber(ARGV[5]))
return {created, trimmed}
"""
)

# ARGV: id, expected json ('' = any) -> 1 removed, 0 missing, -1 changed meanwhile
_LUA_REMOVE = (
    _LUA_DROP
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if ARGV[2] ~= '' and raw ~= ARGV[2] then return -1 end
drop(ARGV[1])
return 1
"""
)

# ARGV: id1, sha1 of its expected json ('' = any), its counts field, id2, ... -> per id:
# 1 removed, 0 missing, -1 changed meanwhile (what _LUA_REMOVE answers for one, for a whole
# batch in one call). The counts field is the expected entry's: used only when the stored
# JSON is that entry's (same SHA-1), so the JSON need not be decoded; otherwise read from it.
_LUA_REMOVE_MANY = (
    _LUA_DROP
    + """
local out = {}
for i = 1, #ARGV, 3 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if not raw then
    out[#out + 1] = 0
  elseif ARGV[i + 1] == '' then
    drop_counted(ARGV[i], field_of(raw)); out[#out + 1] = 1
  elseif redis.sha1hex(raw) ~= ARGV[i + 1] then
    out[#out + 1] = -1
  else
    drop_counted(ARGV[i], ARGV[i + 2]); out[#out + 1] = 1
  end
end
return out
"""
)

# ARGV: min_score, max_count -> number removed
_LUA_TRIM = _LUA_DROP + "\nreturn trim(tonumber(ARGV[1]), tonumber(ARGV[2]))\n"

# ARGV: id1, summary1, id2, summary2, ... -> number written (only for entries that still exist)
_LUA_BACKFILL = """
local written = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); written = written + 1
  end
end
return written
"""


def summary_of(entry: DeadLetter) -> str:
    """The ``summary`` field of ``entry``: what a filtered listing matches on."""
    parts = (entry.queue, entry.task_name, entry.reason, entry.exception_type)
    return FIELD_SEP.join((part or "").replace(FIELD_SEP, " ") for part in parts)


def counts_field(entry: DeadLetter) -> str:
    """The ``counts`` field ``entry`` is counted in (what the Lua ``field_of`` reads from its
    JSON: a queue or task name that is not a string counts as empty)."""
    queue = entry.queue if isinstance(entry.queue, str) else ""
    task = entry.task_name if isinstance(entry.task_name, str) else ""
    return f"{queue}{FIELD_SEP}{task}"


class UnknownEntryError(KeyError):
    """No entry has that id."""

    def __str__(self) -> str:
        return f"no dead-letter entry with id {self.args[0]!r}"


@dataclass(frozen=True)
class DlqStats:
    """Counts of the DLQ, cheap to compute (no entry is read)."""

    total: int
    by_queue_and_task: dict[tuple[str, str], int]
    oldest_failed_at: float | None

    def by_queue(self) -> dict[str, int]:
        """Entries per queue."""
        result: dict[str, int] = {}
        for (queue, _task), count in self.by_queue_and_task.items():
            result[queue] = result.get(queue, 0) + count
        return result


class DeadLetterStore:
    """Read and write dead-letter entries in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "worker_app",
        max_entries: int = 10_000,
        max_age: float = 180 * 24 * 3600,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if max_age <= 0:
            raise ValueError("max_age must be > 0")
        self.client = client
        self.max_entries = max_entries
        self.max_age = max_age
        base = f"{prefix}:dlq"
        self.keys = [f"{base}:entries", f"{base}:index", f"{base}:counts", f"{base}:summary"]
        self._add = client.register_script(_LUA_ADD)
        self._remove = client.register_script(_LUA_REMOVE)
        self._trim = client.register_script(_LUA_TRIM)
        self._backfill = client.register_script(_LUA_BACKFILL)
        self._remove_many = client.register_script(_LUA_REMOVE_MANY)

    # -- writing -------------------------------------------------------------
    def add(self, entry: DeadLetter, now: float | None = None) -> bool:
        """Store ``entry`` (replacing one with the same id) and apply the caps.

        Returns True when the id was new."""
        now = time.time() if now is None else now
        created, _trimmed = self._add(
            keys=self.keys,
            args=[entry.id, entry.to_json(), repr(entry.failed_at), repr(now - self.max_age),
                  self.max_entries, summary_of(entry)],
        )  # fmt: skip
        return bool(created)

    def remove(self, entry_id: str, expected: DeadLetter | None = None) -> bool:
        """Delete an entry; with ``expected``, only if it is still exactly that entry
        (a replayed task that died again meanwhile is kept). Returns True if removed."""
        result = int(
            self._remove(keys=self.keys, args=[entry_id, expected.to_json() if expected else ""])
        )
        if result == 0 and expected is None:
            raise UnknownEntryError(entry_id)
        return result == 1

    def remove_many(self, entries: list[DeadLetter], unchanged: bool = True) -> list[int]:
        """Delete ``entries`` in one atomic call; with ``unchanged``, each only if it is still
        exactly that entry. Per entry, in order: 1 removed, 0 gone already, -1 changed
        meanwhile (kept)."""
        if not entries:
            return []
        args: list[str] = []
        for entry in entries:
            if unchanged:
                digest = hashlib.sha1(entry.to_json().encode(), usedforsecurity=False)
                args += [entry.id, digest.hexdigest(), counts_field(entry)]
            else:
                args += [entry.id, "", ""]
        return [int(status) for status in self._remove_many(keys=self.keys, args=args)]

    def trim(self, now: float | None = None) -> int:
        """Apply the count and age caps now; returns how many entries were removed."""
        now = time.time() if now is None else now
        return int(self._trim(keys=self.keys, args=[repr(now - self.max_age), self.max_entries]))

    def purge(self, older_than: float | None = None, now: float | None = None) -> int:
        """Remove every entry, or those that failed more than ``older_than`` seconds ago."""
        now = time.time() if now is None else now
        cutoff = "+inf" if older_than is None else repr(now - older_than)
        if older_than is None:
            count = int(self.client.zcard(self.keys[1]))
            self.client.delete(*self.keys)
            return count
        return int(self._trim(keys=self.keys, args=[cutoff, 2**62]))

    # -- reading -------------------------------------------------------------
    def get(self, entry_id: str) -> DeadLetter:
        """The entry ``entry_id`` (``UnknownEntryError`` if there is none)."""
        raw = self.client.hget(self.keys[0], entry_id)
        if raw is None:
            raise UnknownEntryError(entry_id)
        return DeadLetter.from_json(raw)

    def iter_entries(
        self, queue: str | None = None, task: str | None = None, newest_first: bool = True
    ) -> Iterator[DeadLetter]:
        """Entries, filtered by queue and task name, in failure order."""
        ids: list[bytes] = self.client.zrange(self.keys[1], 0, -1, desc=newest_first)  # type: ignore[assignment]
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            for raw in self.client.hmget(self.keys[0], batch):
                if raw is None:
                    continue
                try:
                    entry = DeadLetter.from_json(raw)
                except EntryFormatError:
                    continue
                if queue is not None and entry.queue != queue:
                    continue
                if task is not None and entry.task_name != task:
                    continue
                yield entry

    def ids(
        self, newest_first: bool = True, failed_after: float | None = None,
        failed_before: float | None = None,
    ) -> list[str]:  # fmt: skip
        """The ids of the entries that failed in the time range, in failure order."""
        low = "-inf" if failed_after is None else repr(failed_after)
        high = "+inf" if failed_before is None else repr(failed_before)
        rows: list[bytes]
        if newest_first:
            rows = self.client.zrevrangebyscore(self.keys[1], high, low)  # type: ignore[assignment]
        else:
            rows = self.client.zrangebyscore(self.keys[1], low, high)  # type: ignore[assignment]
        return [raw.decode() for raw in rows]

    def raw_summaries(self, ids: list[str]) -> list[bytes | None]:
        """The ``summary`` fields of ``ids``, in that order (None: the entry is gone); an entry
        written before summaries existed gets one now."""
        found: list[bytes | None] = []
        for start in range(0, len(ids), 5000):
            found += self.client.hmget(self.keys[3], ids[start : start + 5000])  # type: ignore[arg-type]
        missing = [entry_id for entry_id, raw in zip(ids, found, strict=True) if raw is None]
        if missing:
            written = self.backfill_summaries(missing)
            found = [
                raw if raw is not None else written.get(entry_id)
                for entry_id, raw in zip(ids, found, strict=True)
            ]
        return found

    def backfill_summaries(self, ids: list[str]) -> dict[str, bytes]:
        """Write the summaries of ``ids`` from their entries (those that still exist)."""
        written: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            pairs: list[str] = []
            for entry_id, raw in zip(batch, self.client.hmget(self.keys[0], batch), strict=True):
                if raw is None:
                    continue
                try:
                    summary = summary_of(DeadLetter.from_json(raw))
                except EntryFormatError:
                    continue
                pairs += [entry_id, summary]
                written[entry_id] = summary.encode()
            if pairs:
                self._backfill(keys=self.keys, args=pairs)
        return written

    def get_many(self, ids: list[str]) -> list[DeadLetter]:
        """The entries of ``ids`` that exist and parse, in that order."""
        entries = []
        for raw in self.client.hmget(self.keys[0], ids) if ids else []:
            if raw is None:
                continue
            try:
                entries.append(DeadLetter.from_json(raw))
            except EntryFormatError:
                continue
        return entries

    def __len__(self) -> int:
        return int(self.client.zcard(self.keys[1]))

    def stats(self) -> DlqStats:
        """Totals by queue and task, and the oldest entry's failure time."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zcard(self.keys[1])
            pipe.hgetall(self.keys[2])
            pipe.zrange(self.keys[1], 0, 0, withscores=True)
            total, counts, oldest = pipe.execute()
        by_qt: dict[tuple[str, str], int] = {}
        for raw_field, raw_count in counts.items():
            queue, _, task = raw_field.decode().partition(FIELD_SEP)
            if int(raw_count) > 0:
                by_qt[(queue, task)] = int(raw_count)
        return DlqStats(
            total=int(total),
            by_queue_and_task=by_qt,
            oldest_failed_at=float(oldest[0][1]) if oldest else None,
        )
