"""kombu's Redis transport with a consumer that cannot lose a message it took off a queue.

kombu takes a message with ``BRPOP`` and records it as unacknowledged with a
second command. In between, the message exists only in the consuming process
— for microseconds, or for as long as a task runs when kombu leaves a popped
reply unread until the worker has room (kombu#305, celery#7950). A worker's
main process killed in that window, or Redis stopped in it, loses the message:
`make chaos` lost four of 10,000 tasks this way.

Here the message is *moved* instead, atomically, into an in-flight list of the
consuming channel (``LMOVE`` in a script for all keys in priority order, else
``BLMOVE`` on the first key), and taken out of that list in the same
transaction that records it as unacknowledged. Each channel keeps its list
registered with a fresh timestamp while it lives; any consumer returns the
messages of a list whose owner stopped refreshing it for ``inflight_grace``
seconds to their queues. Needs Redis >= 6.2.

:func:`install` makes it kombu's ``redis://`` transport in this process, so
URLs, Flower and every other kombu user see the usual scheme.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

logger = logging.getLogger("worker_app.broker")

# KEYS: the queue keys in order, then the in-flight list and the registry; ARGV: now.
# -> {key, message} moved from the first non-empty key into the in-flight list, or nil.
_SCAN = """
local n = #KEYS - 2
redis.call('ZADD', KEYS[n + 2], ARGV[1], KEYS[n + 1])
for i = 1, n do
  local item = redis.call('LMOVE', KEYS[i], KEYS[n + 1], 'RIGHT', 'LEFT')
  if item then return {KEYS[i], item} end
end
return false
"""

# KEYS: the in-flight list, the registry, then one target queue key per item.
# ARGV: stale-before timestamp, then the items as read (oldest last).
# -> number of messages restored, -1 if the owner is alive, -2 if the list changed.
_SWEEP = """
local score = redis.call('ZSCORE', KEYS[2], KEYS[1])
if score and tonumber(score) > tonumber(ARGV[1]) then return -1 end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
if #items ~= #ARGV - 1 then return -2 end
for i = 1, #items do
  if items[i] ~= ARGV[i + 1] then return -2 end
end
for i = #items, 1, -1 do
  redis.call('RPUSH', KEYS[i + 2], items[i])
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return #items
"""


class ReliableQoS(kombu_redis.QoS):  # type: ignore[misc]  # kombu is untyped
    """Records a delivered message as unacknowledged and drops it from the channel's
    in-flight list in one transaction."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """Track ``message`` as delivered (unacked), leaving the in-flight list."""
        channel = self.channel
        raw = channel.inflight_items.pop(delivery_tag, None)
        delivery = message.delivery_info
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(
                self.unacked_key,
                delivery_tag,
                dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
            )
            if raw is not None:
                pipe.lrem(channel.inflight_key, 1, raw)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)


class ReliableChannel(kombu_redis.Channel):  # type: ignore[misc]  # kombu is untyped
    """A Redis channel whose consumer moves messages instead of popping them."""

    QoS = ReliableQoS
    #: sorted set: in-flight list name -> when its owner last said it is alive
    inflight_registry_key = "unacked_inflight"
    #: a list whose owner is silent this long (s) is returned to the queues
    inflight_grace = 30.0
    #: how often (s) an owner refreshes its registration, and sweeps for orphans
    inflight_refresh_interval = 5.0
    inflight_sweep_interval = 15.0

    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "inflight_grace",
        "inflight_refresh_interval",
        "inflight_sweep_interval",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("worker_app's Redis transport does not support global_keyprefix")
        self.inflight_key = f"{self.inflight_registry_key}:{uuid.uuid4()}"
        self.inflight_items: dict[str, bytes] = {}
        self._blocked_key: str | None = None
        self._block_next = False
        self._alive_at = 0.0
        self._swept_at = time.time()

    # -- taking messages ---------------------------------------------------------
    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        if self._block_next:
            # The scan found nothing: wait on the first key (the others are scanned
            # again after at most ``timeout`` seconds).
            self._blocked_key = keys[0]
            command: list[Any] = ["BLMOVE", keys[0], self.inflight_key, "RIGHT", "LEFT"]
            command.append(timeout or 0)
        else:
            self._blocked_key = None
            command = ["EVAL", _SCAN, len(keys) + 2, *keys]
            command += [self.inflight_key, self.inflight_registry_key, time.time()]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            blocked = self._blocked_key
            try:
                reply = self.client.parse_response(
                    self.client.connection, "BLMOVE" if blocked else "EVAL", **options
                )
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            found = (blocked, reply) if blocked and reply is not None else reply or None
            # After an empty scan, block; after a block or a message, scan again.
            self._block_next = blocked is None and found is None
            if not found:
                raise kombu_redis.Empty()
            key, item = found
            dest = bytes_to_str(key).rsplit(self.sep, 1)[0]
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
            # Delivered without an unacked record (a no-ack consumer): done with it.
            with self.conn_or_acquire() as client:
                client.lrem(self.inflight_key, 1, item)

    # -- registration and orphans ------------------------------------------------------
    def maybe_refresh_binding_expiry(self) -> None:
        """kombu's per-second hook: also keep this channel's registration fresh and
        return the messages of dead consumers' in-flight lists."""
        super().maybe_refresh_binding_expiry()
        if not self.active_queues:
            return
        now = time.time()
        if now - self._alive_at >= self.inflight_refresh_interval:
            with self.conn_or_acquire() as client:
                client.zadd(self.inflight_registry_key, {self.inflight_key: now})
            self._alive_at = now
        if now - self._swept_at >= self.inflight_sweep_interval:
            self._swept_at = now
            try:
                self.restore_orphans(now - self.inflight_grace)
            except self.connection_errors:
                raise
            except Exception:
                logger.exception("could not return orphaned in-flight messages")

    def restore_orphans(self, stale_before: float) -> int:
        """Return the messages of every in-flight list not refreshed since ``stale_before``."""
        restored = 0
        with self.conn_or_acquire() as client:
            for raw_name in client.zrangebyscore(self.inflight_registry_key, "-inf", stale_before):
                restored += self._restore_list(client, bytes_to_str(raw_name), stale_before)
        return restored

    def _restore_list(self, client: Any, name: str, stale_before: float) -> int:
        items = client.lrange(name, 0, -1)
        targets = [self._restore_target(item) for item in items]
        count = int(
            client.eval(
                _SWEEP, 2 + len(items), name, self.inflight_registry_key, *targets,
                stale_before, *items,
            )
        )  # fmt: skip
        if count > 0:
            logger.warning(
                "returned %d message(s) that a stopped consumer had taken (%s) to their queues",
                count, name,
            )  # fmt: skip
        return max(count, 0)

    def _restore_target(self, item: bytes) -> str:
        payload = loads(bytes_to_str(item))
        info = payload["properties"]["delivery_info"]
        queues = self._lookup(info["exchange"], info["routing_key"]) or [info["routing_key"]]
        return str(self._q_for_pri(queues[0], self._get_message_priority(payload, reverse=False)))

    def close(self) -> None:
        """Close, then return what this channel still holds in flight (never delivered).

        Unlike kombu, a reply still pending is not delivered while closing: a message
        in it waits in the in-flight list, returned here or by another consumer's
        sweep. (Delivering it meant writing to a Redis that may be gone; the write
        failed, the close stopped half-way, and Celery's second close crashed the
        worker on the transport it had detached in between.)
        """
        if self._in_poll:
            self._drop_pending_reply()
        if getattr(self.connection, "client", None) is None:
            # The transport is detached: nothing reaches Redis from here. Unacked
            # messages stay in its unacked hash (the visibility timeout returns them).
            self.do_restore = False
        detached = not self.do_restore
        super().close()
        if detached:
            return
        try:
            with self.conn_or_acquire() as client:
                self._restore_list(client, self.inflight_key, float("inf"))
        except Exception:  # Redis may be gone; another consumer's sweep gets them later
            logger.debug("could not return in-flight messages at close", exc_info=True)

    def _drop_pending_reply(self) -> None:
        connection = self._in_poll
        self._in_poll = None
        try:
            self.client.parse_response(connection, "BLMOVE" if self._blocked_key else "EVAL")
        except Exception:  # a dead connection: nothing to read
            connection.disconnect()


class Transport(kombu_redis.Transport):  # type: ignore[misc]  # kombu is untyped
    """kombu's Redis transport with :class:`ReliableChannel`."""

    Channel = ReliableChannel


TRANSPORT_PATH = f"{__name__}:Transport"


def install() -> None:
    """Serve ``redis://`` URLs with :class:`Transport` in this process."""
    kombu.transport.TRANSPORT_ALIASES["redis"] = TRANSPORT_PATH
    kombu.transport._transport_cache.pop("redis", None)
