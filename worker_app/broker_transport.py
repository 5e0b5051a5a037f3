"""kombu's Redis transport with a consumer that cannot lose a message it took off a queue.

kombu takes a message with ``BRPOP`` and records it as unacknowledged with a
second command. In between, the message exists only in the consuming process
— for microseconds, or for as long as a task runs when kombu leaves a popped
reply unread until the worker has room (kombu#305, celery#7950). A worker's
main process killed in that window, or Redis stopped in it, loses the message:
`make chaos` lost four of 10,000 tasks this way.

Here the message is *moved* instead, atomically, into an in-flight list of the
consuming channel (``LMOVE`` in a script for all keys in priority order), and taken out
of that list in the same
script (atomic) that records it as unacknowledged — and as *owned* by the channel
(a set of delivery tags per consumer).

Each consuming channel is a consumer with a heartbeat: while it lives it
refreshes its registration every ``inflight_refresh_interval`` seconds, and
with it the unacked timestamps of every message it owns, so kombu's visibility
timeout never returns a message whose consumer is alive (a long task, an ETA
hours away). A consumer silent for ``inflight_grace`` seconds is dead: the
first live consumer to notice returns everything it held — its in-flight list
and the unacknowledged messages it owned — to their queues in one script
(atomically, once), and counts them by queue. The visibility timeout stays as
the backstop for messages no consumer owns (taken by a worker without this
transport). Needs Redis >= 6.2.

kombu's ``global_keyprefix`` is honoured: every key this transport names itself (queues,
in-flight lists, owned sets, the registry and its counters) lives under the prefix; the
registry holds consumer names without it.

No Redis command blocks on several lists and moves a message atomically, so an idle consumer
waits on *bells* instead: every publish through this transport also pushes to its queue's
bell list (``<queue>\x06\x16bell``, capped at ``BELLS``) in the same round trip (a batch of
publishes, once per queue at its end), and a
consumer after an empty scan blocks (``BRPOP``) on the bells of its queues, then scans
again. A message from a producer without this transport is found by the next scan, at most
``brpop_timeout`` (1 s) later.

Where it differs from kombu by design: a reply left pending while the worker has no room
(kombu keeps a blocking ``BRPOP`` for messages pending and delivers its message on resume) is
an empty scan or a bell here, and the message published meanwhile comes with the next
command.

:func:`install` makes it kombu's ``redis://`` transport in this process, so
URLs, Flower and every other kombu user see the usual scheme; and, combined with kombu's
``SentinelChannel`` (the master found through Redis Sentinel), its ``sentinel://`` transport.
A failover is a broken connection to this transport: the worker reconnects (Celery), finds the
new master (Sentinel), and its next consumer returns what the broken one held (the in-flight
lists, owned sets and unacked entries live in Redis and were replicated). A demoted master's
``READONLY`` reply, or the ``UNBLOCKED`` reply Redis gives a blocked command when it turns
into a replica, is a broken connection too.

Durability of a publish (``publish_min_replicas``, transport option): when > 0, a publish
returns only after Redis ``WAIT`` (same connection, same round trip) confirms that many
replicas have the message, and raises :class:`PublishNotReplicatedError` when fewer
acknowledge within ``publish_replica_timeout`` (ms). Replication stays asynchronous: see
docs/ha.md for what this does and does not guarantee.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
import weakref
from typing import Any, ClassVar

import kombu.transport
import redis
from kombu.exceptions import BatchPublishError, OperationalError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

logger = logging.getLogger("worker_app.broker")

#: rings kept per queue bell (publishes while no consumer waits); one wakes one consumer
BELLS = 64

# KEYS: the queue keys in order, then the in-flight list and the registry; ARGV: now, the
# consumer's name (its in-flight list's name without global_keyprefix).
# -> {key, message} moved from the first non-empty key into the in-flight list, or nil.
_SCAN = """
local n = #KEYS - 2
redis.call('ZADD', KEYS[n + 2], ARGV[1], ARGV[2])
for i = 1, n do
  local item = redis.call('LMOVE', KEYS[i], KEYS[n + 1], 'RIGHT', 'LEFT')
  if item then return {KEYS[i], item} end
end
return false
"""

# A consumer's heartbeat. KEYS: the registry, its owned set, the unacked index; ARGV: now, the
# consumer's name. -> {1 if it was registered, number of messages it owns}.
_HEARTBEAT = """
local had = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local tags = redis.call('SMEMBERS', KEYS[2])
for i = 1, #tags do
  redis.call('ZADD', KEYS[3], 'XX', ARGV[1], tags[i])
end
if had then return {1, #tags} end
return {0, #tags}
"""

# A delivered message recorded as unacknowledged and owned by its consumer, out of the
# consumer's in-flight list: one script (atomic, like the transaction it replaces, with one
# command to send and one reply to read instead of six). KEYS: the unacked index, the unacked
# hash, the owned set, the in-flight list; ARGV: now, the delivery tag, the unacked entry, the
# in-flight item, 1 when the item is to leave the in-flight list.
_APPEND = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
if ARGV[5] == '1' then redis.call('LREM', KEYS[4], 1, ARGV[4]) end
return 1
"""

# An ack: the message leaves the unacked index, hash and its consumer's owned set, atomically.
# KEYS: the unacked index, the unacked hash, the owned set; ARGV: the delivery tag.
_ACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# Return a dead consumer's messages. KEYS: the registry, the consumer (its in-flight list), its
# owned set, the unacked hash, the unacked index, the restored-counts hash, the dead-consumers
# counter, then the target queue keys. ARGV: stale-before timestamp, the plan as JSON, the
# consumer's name. The plan:
# {"items": [[raw, key index, queue]...] (the in-flight list as read), "owned": [[tag,
# unacked entry as read, queue, [[key index, payload]...]]...], "closing": bool, "dead":
# bool, "bells": [key index...], "bell_cap": int}. Entries acked meanwhile are skipped; the
# bells of the queues messages went back to are rung.
# closing (a consumer closing itself, after kombu returned its unacked messages): only the
# in-flight list goes back, and the consumer is unregistered if it owns nothing any more.
# A dead consumer swept is counted in the dead-consumers counter (KEYS[7]); one of this
# process's own consumers whose connection broke (dead false) is not.
# -> number of messages restored; -1 the consumer is alive; -2 its messages changed (retry).
_SWEEP = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[3])
if score and tonumber(score) > tonumber(ARGV[1]) then return -1 end
local plan = cjson.decode(ARGV[2])
local items = redis.call('LRANGE', KEYS[2], 0, -1)
if #items ~= #plan.items then return -2 end
for i = 1, #items do
  if items[i] ~= plan.items[i][1] then return -2 end
end
if not plan.closing then
  local owned = redis.call('SMEMBERS', KEYS[3])
  if #owned ~= #plan.owned then return -2 end
  local planned = {}
  for _, t in ipairs(plan.owned) do planned[t[1]] = true end
  for _, tag in ipairs(owned) do
    if not planned[tag] then return -2 end
  end
end
local restored = 0
for i = #plan.items, 1, -1 do
  redis.call('RPUSH', KEYS[plan.items[i][2]], plan.items[i][1])
  if not plan.closing then redis.call('HINCRBY', KEYS[6], plan.items[i][3], 1) end
  restored = restored + 1
end
for _, t in ipairs(plan.owned) do
  local entry = redis.call('HGET', KEYS[4], t[1])
  if entry and entry == t[2] then
    for _, push in ipairs(t[4]) do
      redis.call('RPUSH', KEYS[push[1]], push[2])
    end
    redis.call('HDEL', KEYS[4], t[1])
    redis.call('ZREM', KEYS[5], t[1])
    redis.call('HINCRBY', KEYS[6], t[3], 1)
    restored = restored + 1
  end
end
if restored > 0 then
  for _, b in ipairs(plan.bells) do
    redis.call('LPUSH', KEYS[b], 1)
    redis.call('LTRIM', KEYS[b], 0, plan.bell_cap - 1)
  end
end
redis.call('DEL', KEYS[2])
if not plan.closing then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[1], ARGV[3])
  if plan.dead then redis.call('INCR', KEYS[7]) end
elseif redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[1], ARGV[3])
end
return restored
"""


class PublishNotReplicatedError(OperationalError):  # type: ignore[misc]  # kombu is untyped
    """A publish reached the master but fewer replicas than ``publish_min_replicas``
    acknowledged it in time: it may be lost if the master fails now (a retry would publish a
    second copy, so none is made)."""

    def __init__(self, acknowledged: int, required: int, timeout_ms: int) -> None:
        super().__init__(
            f"the message was written to the Redis master but only {acknowledged} of the "
            f"{required} replica(s) required (WORKER_APP_PUBLISH_MIN_REPLICAS) acknowledged "
            f"it within {timeout_ms} ms: it may be lost if the master fails now"
        )
        self.acknowledged = acknowledged
        self.required = required
        self.timeout_ms = timeout_ms


class ReliablePublishBatch(kombu_redis.PublishBatch):  # type: ignore[misc]  # kombu is untyped
    """kombu's publish batch (``Producer.batch()``: many publishes, one round trip) for this
    transport: each queue's bell is rung once per flush, after every message of the flush (not
    once per message); with ``replicas``, a ``WAIT`` ends each flush, so a batch returns, as a
    single publish does, only once the replicas have every message of it."""

    def __init__(self, channel: Any, max_size: int, replicas: int, timeout_ms: int) -> None:
        super().__init__(channel, max_size)
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.bells: dict[str, int | None] = {}  # bell -> its queue's expiry (ms), to ring

    def flush(self) -> None:
        """kombu's flush (the same failure handling), with the bells and the WAIT last."""
        self._check_usable()
        if not self._buffered:  # type: ignore[has-type]  # kombu is untyped
            return
        for bell, expires in self.bells.items():
            self.pipeline.lpush(bell, 1)
            self.pipeline.ltrim(self.channel.physical(bell), 0, BELLS - 1)
            if expires:
                self.pipeline.pexpire(bell, expires)
        self.bells.clear()
        if self.replicas:
            self.pipeline.wait(self.replicas, self.timeout_ms)
        try:
            results = self.pipeline.execute()
        except BaseException as exc:
            self._failed = exc
            self._buffered = 0
            self.pipeline.reset()
            if isinstance(exc, Exception):
                raise BatchPublishError(
                    "Redis publish batch failed; delivery is uncertain"
                ) from exc
            raise
        self._buffered = 0
        if self.replicas and int(results[-1]) < self.replicas:
            raise PublishNotReplicatedError(int(results[-1]), self.replicas, self.timeout_ms)


def is_role_change(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis saying the master we talk to became a replica (a failover):
    ``READONLY`` to a write, ``UNBLOCKED`` to a blocked command."""
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(
        ("UNBLOCKED", "READONLY")
    )


def role_changed(exc: BaseException) -> redis.exceptions.ConnectionError:
    """The connection error a role change (:func:`is_role_change`) is to the transport."""
    return redis.exceptions.ConnectionError(
        f"the Redis master this connection reached became a replica (a failover?): {exc}"
    )


def reconnect_pause(down_for: float) -> float:
    """The longest a worker whose connection broke ``down_for`` seconds ago may still wait
    before its next reconnection attempt once Redis is back: Celery's consumer reconnects
    through kombu's ``ensure_connection`` with its default backoff (pauses of 2, 4, 6 ... s,
    at most 30 s); one step more, for an attempt that failed just as Redis came back."""
    steps = math.ceil((math.sqrt(1 + 4 * max(down_for, 0.0)) - 1) / 2)  # k(k + 1) >= down_for
    return min(30.0, 2.0 * (steps + 1))


class ReliableQoS(kombu_redis.QoS):  # type: ignore[misc]  # kombu is untyped
    """Records a delivered message as unacknowledged and owned by its channel, and drops it
    from the channel's in-flight list, in one script (atomic)."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """Track ``message`` as delivered (unacked, owned), leaving the in-flight list."""
        channel = self.channel
        raw = channel.inflight_items.pop(delivery_tag, None)
        delivery = message.delivery_info
        entry = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        physical = channel.physical
        with channel.conn_or_acquire() as client:
            client.eval(
                _APPEND, 4, physical(self.unacked_index_key), physical(self.unacked_key),
                physical(channel.owned_key), physical(channel.inflight_key),
                time.time(), delivery_tag, entry, raw if raw is not None else b"",
                0 if raw is None else 1,
            )  # fmt: skip
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """kombu's ack (the message leaves the unacked index and hash), and it leaves this
        channel's owned set, in one script."""
        channel = self.channel
        physical = channel.physical
        with channel.conn_or_acquire() as client:
            client.eval(
                _ACK, 3, physical(self.unacked_index_key), physical(self.unacked_key),
                physical(channel.owned_key), delivery_tag,
            )  # fmt: skip
        virtual.QoS.ack(self, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's, and the tag leaves this channel's owned set."""
        with self.pipe_or_acquire(pipe) as chain:
            return (
                super()
                ._remove_from_indices(delivery_tag, chain)
                .srem(self.channel.owned_key, delivery_tag)
            )


class ReliableChannel(kombu_redis.Channel):  # type: ignore[misc]  # kombu is untyped
    """A Redis channel whose consumer moves messages instead of popping them."""

    QoS = ReliableQoS
    #: sorted set: consumer (its in-flight list's name) -> its last heartbeat
    inflight_registry_key = "unacked_inflight"
    #: hash: queue -> messages returned from dead consumers (ever)
    inflight_restored_key = "unacked_restored"
    #: counter: consumers found dead (silent past the grace period) and swept (ever)
    inflight_dead_key = "unacked_dead_consumers"
    #: a consumer silent this long (s) is dead: its messages go back to their queues
    inflight_grace = 30.0
    #: how often (s) a consumer beats (refreshing its messages' unacked timestamps), and sweeps
    inflight_refresh_interval = 5.0
    inflight_sweep_interval = 15.0

    #: this process's consumers that closed without reaching Redis (a broken connection):
    #: returned by the process's next live consumer at once, not counted as deaths
    abandoned: ClassVar[set[str]] = set()
    #: the last heartbeat of this process before its connection broke last (0: never)
    connection_broke_at: ClassVar[float] = 0.0
    #: this process's last heartbeat, and its consumers by name
    process_beat_at: ClassVar[float] = 0.0
    #: when this process's heartbeats got through again after a gap (the break it found so)
    process_resumed_at: ClassVar[float] = 0.0
    consumers: ClassVar[weakref.WeakValueDictionary[str, ReliableChannel]] = (
        weakref.WeakValueDictionary()
    )

    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "inflight_grace",
        "inflight_refresh_interval",
        "inflight_sweep_interval",
        "publish_min_replicas",
        "publish_replica_timeout",
    )
    #: a publish waits for this many replicas to acknowledge it (Redis WAIT; 0: off)
    publish_min_replicas = 0
    #: ... for at most this long (ms), then raises PublishNotReplicatedError
    publish_replica_timeout = 1000
    #: (pool, client): the synchronous client of :meth:`_create_client`, per pool
    _sync_client: tuple[Any, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Which consumer holds a message, readable by an operator: host, process, channel.
        self.inflight_key = (
            f"{self.inflight_registry_key}:{socket.gethostname()}:{os.getpid()}:"
            f"{uuid.uuid4().hex[:12]}"
        )
        self.owned_key = f"{self.inflight_key}:owned"
        self.inflight_items: dict[str, bytes] = {}
        self._waiting = False  # the command in flight waits for a bell
        self._block_next = False
        self._alive_at = 0.0
        self._swept_at = time.time()
        self._consumed = False  # registered (by a scan) as a consumer
        self._beating_since = 0.0

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """kombu's connection parameters; a connection error, not an ``AttributeError``, once
        the transport is detached: Celery acknowledges a task that finished while its broker
        connection broke (a failover, a restart) on the old channel, whose pool is gone. The
        message stays owned by this consumer, and the process's next consumer returns it."""
        connection = self.connection
        if connection is None or getattr(connection, "client", None) is None:
            raise redis.exceptions.ConnectionError(
                "this channel's broker connection broke and was closed: it reaches no Redis"
            )
        return dict(super()._connparams(asynchronous))

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu's client; the synchronous one is built once per connection pool and reused.
        kombu builds a new redis-py client for every command outside the poll (each
        ``conn_or_acquire``): ~150-300 µs of CPU each (redis-py copies its ~170 response
        callbacks into a new dict), twice per task in the worker's main process (the unacked
        record and the ack). A client holds no connection of its own: every command takes one
        from the pool and gives it back, so sharing it changes nothing else."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._sync_client
        if cached is None or cached[0] is not pool:
            cached = self._sync_client = (pool, super()._create_client())
        return cached[1]

    # -- taking messages ---------------------------------------------------------
    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        physical = [self.physical(key) for key in keys]
        inflight = self.physical(self.inflight_key)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        if not self._consumed:
            self._consumed = True
            ReliableChannel.consumers[self.inflight_key] = self
        if self._block_next:
            # The scan found nothing: wait for a bell of any of these queues (rung by every
            # publish through this transport), then scan again; without one, scan again
            # after ``timeout`` seconds (a producer without this transport).
            self._waiting = True
            command: list[Any] = ["BRPOP", *(self.physical(self.bell(q)) for q in queues)]
            command.append(timeout or 0)
        else:
            self._waiting = False
            command = ["EVAL", _SCAN, len(keys) + 2, *physical]
            command += [inflight, self.physical(self.inflight_registry_key)]
            command += [time.time(), self.inflight_key]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            waiting = self._waiting
            try:
                reply = self.client.parse_response(
                    self.client.connection, "BRPOP" if waiting else "EVAL", **options
                )
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except redis.exceptions.ResponseError as exc:
                if not is_role_change(exc):
                    raise
                # A failover demoted this master: a broken connection, found again through
                # Sentinel (or the same address) when Celery reconnects.
                self.client.connection.disconnect()
                raise role_changed(exc) from exc
            # After an empty scan, wait for a bell; after a bell, a timeout or a message,
            # scan again.
            self._block_next = not waiting and not reply
            if waiting or not reply:
                raise kombu_redis.Empty()
            key, item = reply
            # The script returns the key as Redis knows it.
            key = bytes_to_str(key)[len(self.global_keyprefix or "") :]
            dest = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self._deliver_moved(item, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _deliver_moved(self, item: bytes, queue: str) -> None:
        payload = loads(bytes_to_str(item))
        tag = (payload.get("properties") or {}).get("delivery_tag")
        if tag is not None:
            self.inflight_items[tag] = item
        try:
            self.connection._deliver(payload, queue)
        except BaseException:
            # Still in the in-flight list: a sweep returns it to its queue.
            if tag is not None:
                self.inflight_items.pop(tag, None)
            raise
        if tag is None or self.inflight_items.pop(tag, None) is not None:
            # Delivered without an unacked record (a no-ack consumer): done with it. On the
            # connection that just took it (alive), not a pooled one that may be half-open.
            self.client.lrem(self.physical(self.inflight_key), 1, item)

    # -- registration and orphans ------------------------------------------------------
    def maybe_refresh_binding_expiry(self) -> None:
        """kombu's per-second hook: also beat, and return the messages of dead consumers.

        After this process's connection broke (a Redis restart or outage), its new consumer
        leaves alone the consumers that last beat around the break, for the grace period
        plus the longest a worker that lost Redis with it may still pause between attempts
        to reconnect (:func:`reconnect_pause`): every worker's connection broke then, and
        each returns what its own broken one held when it reconnects (not a death).
        Consumers silent since before the break, or since after this consumer started, are
        swept as usual."""
        super().maybe_refresh_binding_expiry()
        if not self.active_queues:
            return
        now = time.time()
        if now - self._alive_at >= self.inflight_refresh_interval:
            self.heartbeat(now)
            self._alive_at = now
            self._beating_since = self._beating_since or now
            last, ReliableChannel.process_beat_at = ReliableChannel.process_beat_at, now
            if last and now - last > 2 * self.inflight_refresh_interval + 1:
                # No heartbeat got through for a while: the connection broke (or this process
                # was stuck in a call to the Redis that was gone, and noticed nothing).
                ReliableChannel.connection_broke_at = last
                ReliableChannel.process_resumed_at = now
                self._find_abandoned(last)
            if ReliableChannel.abandoned:
                try:
                    self.restore_abandoned()
                except self.connection_errors:
                    raise
                except Exception:
                    logger.exception("could not return what this process's closed consumers held")
        if now - self._swept_at >= self.inflight_sweep_interval and self._beating_since:
            self._swept_at = now
            spare = None
            broke_at = ReliableChannel.connection_broke_at
            margin = 2 * self.inflight_refresh_interval
            # Back since: this consumer's first beat, or, for a consumer that lived through the
            # break without noticing it (its process blocked in a call meanwhile), the beat that
            # found the gap. Either way the others' broken connections are spared from then on.
            resumed = ReliableChannel.process_resumed_at
            back = max(self._beating_since, resumed if resumed > broke_at else 0.0)
            down_for = back - broke_at + margin
            if broke_at and now - back < self.inflight_grace + reconnect_pause(down_for):
                spare = (broke_at - margin, back)
            try:
                self.restore_orphans(now - self.inflight_grace, spare=spare)
            except self.connection_errors:
                raise
            except Exception:
                logger.exception("could not return orphaned in-flight messages")

    def heartbeat(self, now: float) -> None:
        """Say this consumer is alive, and keep the messages it owns from the visibility
        timeout. Finding itself unregistered while it holds messages means it was cut off
        longer than the grace period and they were returned to their queues (they may run
        twice): logged and signalled (``events.consumer_cut_off``)."""
        with self.conn_or_acquire() as client:
            registered, _owned = client.eval(
                _HEARTBEAT, 3, self.physical(self.inflight_registry_key),
                self.physical(self.owned_key), self.physical(self.qos.unacked_index_key),
                now, self.inflight_key,
            )  # fmt: skip
        held = len(getattr(self.qos, "_delivered", None) or ())
        if not registered and held and self._alive_at:
            logger.error(
                "this consumer (%s) was silent for longer than the grace period (%.0f s): its "
                "%d unacknowledged message(s) were returned to their queues and may run twice",
                self.inflight_key, self.inflight_grace, held,
            )  # fmt: skip
            from worker_app import events  # noqa: PLC0415 - the transport needs no signals else

            events.consumer_cut_off.send(sender=self, held=held)

    def _find_abandoned(self, broke_at: float) -> None:
        """This process's consumers that have not beaten since its connection broke, but
        not this connection's own: they belong to the broken one, whether or not Celery
        closed them."""
        mine = f"{self.inflight_registry_key}:{socket.gethostname()}:{os.getpid()}:"
        with self.conn_or_acquire() as client:
            registry = self.physical(self.inflight_registry_key)
            for raw in client.zrangebyscore(registry, "-inf", broke_at):
                name = bytes_to_str(raw)
                sibling = ReliableChannel.consumers.get(name)
                if name.startswith(mine) and (
                    sibling is None or sibling.connection is not self.connection
                ):
                    ReliableChannel.abandoned.add(name)

    def restore_abandoned(self) -> int:
        """Return what this process's consumers held when their connection broke (a Redis
        restart or outage): Celery dropped those requests when it reconnected and waits for
        them to be delivered again. At once, and not counted as dead consumers."""
        restored = 0
        with self.conn_or_acquire() as client:
            for name in sorted(ReliableChannel.abandoned):
                restored += self._restore_consumer(client, name, float("inf"), dead=False)
                ReliableChannel.abandoned.discard(name)
        return restored

    def restore_orphans(self, stale_before: float, spare: tuple[float, float] | None = None) -> int:
        """Return the messages of every consumer silent since ``stale_before``, except those
        whose last heartbeat falls in ``spare`` (from, to)."""
        restored = 0
        with self.conn_or_acquire() as client:
            found = client.zrangebyscore(
                self.physical(self.inflight_registry_key), "-inf", stale_before, withscores=True
            )
            for raw_name, score in found:
                if spare is not None and spare[0] <= score < spare[1]:
                    continue
                name = bytes_to_str(raw_name)
                try:
                    restored += self._restore_consumer(client, name, stale_before)
                except self.connection_errors:
                    raise
                except Exception:  # one consumer's bad message must not strand the others'
                    logger.exception("could not return what consumer %s held; it stays", name)
        return restored

    def _restore_consumer(
        self, client: Any, name: str, stale_before: float, closing: bool = False,
        dead: bool = True,
    ) -> int:  # fmt: skip
        """Return everything consumer ``name`` held: its in-flight list (as it is) and the
        unacknowledged messages it owned (marked redelivered, as kombu restores them); or,
        ``closing`` (this consumer, closing), just the in-flight list. ``dead``: count it as a
        dead consumer (not for this process's own broken connections)."""
        keys: list[str] = [self.physical(key) for key in (
            self.inflight_registry_key, name, f"{name}:owned", self.qos.unacked_key,
            self.qos.unacked_index_key, self.inflight_restored_key, self.inflight_dead_key,
        )]  # fmt: skip

        def key_index(key: str) -> int:
            keys.append(self.physical(key))
            return len(keys)  # Lua's KEYS are 1-based

        items = []
        targets: set[str] = set()  # the queues messages go back to
        for item in client.lrange(self.physical(name), 0, -1):
            payload = loads(bytes_to_str(item))
            queue, target = self._restore_target(payload)
            items.append([bytes_to_str(item), key_index(target), queue])
            targets.add(queue)
        owned: list[list[Any]] = []
        tags = (
            [] if closing else sorted(bytes_to_str(tag) for tag in client.smembers(f"{name}:owned"))
        )
        entries = client.hmget(self.physical(self.qos.unacked_key), tags) if tags else []
        for tag, entry in zip(tags, entries, strict=True):
            if entry is None:  # acked since
                owned.append([tag, False, "", []])
                continue
            payload, exchange, routing_key = loads(bytes_to_str(entry))
            for field in (payload.get("headers"), payload.get("properties", {}).get(
                    "delivery_info")):  # fmt: skip
                if isinstance(field, dict):
                    field["redelivered"] = True
            queues = self._queues_of(exchange, routing_key)
            priority = self._get_message_priority(payload, reverse=False)
            pushes = [[key_index(self._q_for_pri(q, priority)), dumps(payload)] for q in queues]
            owned.append([tag, bytes_to_str(entry), queues[0], pushes])
            targets.update(queues)
        # Their queues' bells ring (when anything went back): an idle consumer takes them now.
        bells = [key_index(self.bell(queue)) for queue in sorted(targets)]
        plan = dumps({"items": items, "owned": owned, "closing": closing, "dead": dead,
                      "bells": bells, "bell_cap": BELLS})  # fmt: skip
        count = int(client.eval(_SWEEP, len(keys), *keys, stale_before, plan, name))
        if count > 0:
            logger.warning(
                "returned %d message(s) that a stopped consumer had taken (%s) to their queues",
                count, name,
            )  # fmt: skip
        return max(count, 0)

    # -- publishing: the message, and its queue's bell -----------------------------------
    def bell(self, queue: str) -> str:
        """The list a publish to ``queue`` rings (pushes to) and idle consumers wait on."""
        return f"{queue}{self.sep}bell"

    def create_publish_batch(self, max_size: int) -> Any:
        """A publish batch that rings the bells once per flush and waits for the replicas
        (kombu's own would return before any replica has the messages)."""
        replicas = int(self.publish_min_replicas or 0)
        return ReliablePublishBatch(self, max_size, replicas, int(self.publish_replica_timeout))

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish, and a ring of the queue's bell in the same round trip: an idle
        consumer of any of its queues wakes at once (no Redis command blocks on several
        lists and moves atomically, so consumers wait on the bells, then scan)."""
        bell = self.bell(queue)
        batch = kwargs.get("_publish_batch")
        expires = self._expires.get(queue) if self._expires else None
        if batch is not None:
            super()._put(queue, message, **kwargs)
            batch.bells[bell] = expires  # rung once, when the batch flushes
            return
        priority = self._get_message_priority(message, reverse=False)
        replicas = int(self.publish_min_replicas or 0)
        # With replicas to wait for, no MULTI: WAIT inside a transaction does not wait. The
        # writes and the WAIT still go in one round trip, on one connection (WAIT counts the
        # replicas that have this connection's writes).
        with self.conn_or_acquire() as client, client.pipeline(transaction=not replicas) as pipe:
            pipe.lpush(self._q_for_pri(queue, priority), dumps(message))
            pipe.lpush(bell, 1)
            pipe.ltrim(self.physical(bell), 0, BELLS - 1)  # LTRIM: kombu does not prefix it
            if expires:  # the queue's keys expire together (x-expires)
                for key in [*(self._q_for_pri(queue, step) for step in self.priority_steps), bell]:
                    pipe.pexpire(key, expires)
            if replicas:
                pipe.wait(replicas, int(self.publish_replica_timeout))
            try:
                results = pipe.execute()
            except redis.exceptions.ResponseError as exc:
                if is_role_change(exc):  # a demoted master: reconnect, as for a broken one
                    raise role_changed(exc) from exc
                raise
        if replicas and int(results[-1]) < replicas:
            raise PublishNotReplicatedError(
                int(results[-1]), replicas, int(self.publish_replica_timeout)
            )

    def _maybe_update_queues_expire(self, client: Any, queue: str) -> None:
        """kombu's refresh of an expiring queue's keys, its bell included."""
        super()._maybe_update_queues_expire(client, queue)
        if self._expires and queue in self._expires:
            client.pexpire(self.bell(queue), self._expires[queue])

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        """kombu's queue delete, and the queue's bell."""
        super()._delete(queue, *args, **kwargs)
        with self.conn_or_acquire(client=kwargs.get("client")) as client:
            client.delete(self.bell(queue))

    def physical(self, key: str) -> str:
        """``key`` as Redis knows it: with ``global_keyprefix``. kombu's client adds the prefix
        to the commands it knows (``SADD``, ``ZADD``, ``HSET``, ``SMEMBERS``...); the others
        this transport sends (scripts, ``LTRIM``, ``LREM``, ``LRANGE``, ``HMGET``,
        ``ZRANGEBYSCORE``) get it here. Consumer names in the registry carry no prefix."""
        return f"{self.global_keyprefix or ''}{key}"

    def _queues_of(self, exchange: str, routing_key: str) -> list[str]:
        """The queues a message of (exchange, routing key) goes to (kombu's lookup returns a
        list for the default exchange and a set for named ones), in a stable order."""
        found = self._lookup(exchange, routing_key) or [routing_key]
        return sorted(str(queue) for queue in found)

    def _restore_target(self, payload: dict[str, Any]) -> tuple[str, str]:
        """(queue, key) a never-delivered in-flight message goes back to."""
        info = payload["properties"]["delivery_info"]
        queue = self._queues_of(info["exchange"], info["routing_key"])[0]
        return queue, str(
            self._q_for_pri(queue, self._get_message_priority(payload, reverse=False))
        )

    def close(self) -> None:
        """Close, then return what this channel still holds in flight (never delivered).

        Unlike kombu, a reply still pending is not delivered while closing: a message
        in it waits in the in-flight list, returned here or by another consumer's
        sweep. (Delivering it meant writing to a Redis that may be gone; the write
        failed, the close stopped half-way, and Celery's second close crashed the
        worker on the transport it had detached in between.)
        """
        if self._in_poll and not self._drop_pending_reply():
            # Redis did not answer the pending reply: gone, or a silent peer (a half-open
            # connection, whose reads Celery bounds before a teardown). Writing the in-flight
            # list back would wait on a fresh connection nothing bounds, and the worker would
            # hang in its reconnect or its shutdown (Celery's test_connection_recovery): leave
            # it to this process's next consumer, as when the transport is detached.
            self.do_restore = False
            if self._consumed:
                self._abandon()
        if getattr(self.connection, "client", None) is None:
            # The transport is detached: nothing reaches Redis from here. What this
            # consumer holds stays owned by it: this process's next live consumer returns
            # it (else a live consumer's sweep, once the heartbeat is older than the grace).
            self.do_restore = False
            if self._consumed:
                self._abandon()
        if self.do_restore and not self.closed:
            # While the channel still reaches Redis: kombu's return of the unacked messages it
            # holds (its close would do it, once), then the in-flight list kombu knows nothing
            # of, and this consumer leaves the registry (a sweep would count it as dead).
            try:
                self.qos.restore_unacked_once()
                with self.conn_or_acquire() as client:
                    self._restore_consumer(client, self.inflight_key, float("inf"), closing=True)
            except Exception:  # Redis may be gone: the process's next consumer returns them
                logger.debug("could not return in-flight messages at close", exc_info=True)
                if self._consumed:
                    self._abandon()
        super().close()

    def _abandon(self) -> None:
        """Leave what this consumer holds to the process's next consumer (see
        :meth:`restore_abandoned`), noting when its connection last worked."""
        ReliableChannel.abandoned.add(self.inflight_key)
        ReliableChannel.connection_broke_at = max(
            ReliableChannel.connection_broke_at, self._alive_at
        )

    def _drop_pending_reply(self) -> bool:
        """Read and drop the reply still pending; False when Redis did not give it."""
        connection = self._in_poll
        self._in_poll = None
        try:
            self.client.parse_response(connection, "BRPOP" if self._waiting else "EVAL")
        except Exception:  # a dead connection (or a bounded read timed out): nothing to read
            connection.disconnect()
            return False
        return True


class Transport(kombu_redis.Transport):  # type: ignore[misc]  # kombu is untyped
    """kombu's Redis transport with :class:`ReliableChannel`."""

    Channel = ReliableChannel


class ReliableSentinelChannel(ReliableChannel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """:class:`ReliableChannel` on the master that Redis Sentinel names (kombu's
    ``SentinelChannel``: ``master_name``, ``sentinel_kwargs``, ``min_other_sentinels``)."""

    from_transport_options = tuple(
        dict.fromkeys(
            (
                *ReliableChannel.from_transport_options,
                *kombu_redis.SentinelChannel.from_transport_options,
            )
        )
    )


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    """kombu's Sentinel transport with :class:`ReliableSentinelChannel`."""

    Channel = ReliableSentinelChannel


TRANSPORT_PATH = f"{__name__}:Transport"
SENTINEL_TRANSPORT_PATH = f"{__name__}:SentinelTransport"


#: kombu releases (major.minor) kombu's own Redis suite passed on with this transport
#: (``make upstream``); it overrides private parts of kombu, so no other is trusted.
TESTED_KOMBU = ("5.7",)


class UntestedKombuError(RuntimeError):
    """kombu is not a release this transport was tested on."""


def check_kombu(version: str | None = None) -> None:
    """Refuse a kombu release the transport was not tested on, naming the tested ones."""
    version = version or str(kombu.__version__)
    if ".".join(version.split(".")[:2]) not in TESTED_KOMBU:
        tested = ", ".join(f"{release}.x" for release in TESTED_KOMBU)
        raise UntestedKombuError(
            f"worker_app's Redis transport replaces private parts of kombu and is tested on "
            f"kombu {tested} (make upstream); this process has kombu {version}: install a "
            f"tested one (pip install 'kombu>={TESTED_KOMBU[0]},<{_next(TESTED_KOMBU[-1])}')"
        )


def _next(release: str) -> str:
    major, minor = release.split(".")
    return f"{major}.{int(minor) + 1}"


#: kombu's aliases served by this module's transports: ``rediss://`` (TLS) is kombu's Redis
#: transport with ``SSLConnection`` (the ``ssl`` connection argument, Celery's
#: ``broker_use_ssl``), so it keeps the no-loss guarantee exactly as ``redis://``.
ALIASES = (
    ("redis", TRANSPORT_PATH),
    ("rediss", TRANSPORT_PATH),
    ("sentinel", SENTINEL_TRANSPORT_PATH),
)


def install() -> None:
    """Serve ``redis://`` and ``rediss://`` URLs with :class:`Transport` and ``sentinel://``
    URLs with :class:`SentinelTransport` in this process (on a tested kombu)."""
    check_kombu()
    for alias, path in ALIASES:
        kombu.transport.TRANSPORT_ALIASES[alias] = path
        kombu.transport._transport_cache.pop(alias, None)
