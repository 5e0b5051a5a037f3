"""Consumer heartbeats (worker_app.broker_transport): a dead consumer's messages come back as
soon as its heartbeat is older than the grace period; a live consumer's never do, however long
it holds them. Against a real redis-server, through kombu with the transport."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tests.integration.conftest import StartWorker, records
from tests.support import fleet_tasks
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import start_worker
from worker_app.broker_transport import ReliableChannel

pytestmark = pytest.mark.integration

TRANSPORT = "worker_app.broker_transport:Transport"
REGISTRY = ReliableChannel.inflight_registry_key
RESTORED = ReliableChannel.inflight_restored_key
DEAD = ReliableChannel.inflight_dead_key
GRACE = 10  # WORKER_APP_CONSUMER_GRACE of this module's workers (its minimum)


@pytest.fixture(scope="module")
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    """Workers (and producers) of this module: the default one-hour visibility timeout, a
    10 s grace period."""
    return {**worker_env, "WORKER_APP_CONSUMER_GRACE": str(GRACE)}


@pytest.fixture
def connect(redis_server: RedisServer) -> Iterator[Any]:
    opened: list[Connection] = []

    def open_one(**options: Any) -> Connection:
        conn = Connection(redis_server.url(0), transport=TRANSPORT, transport_options=options)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.release()


def _take(conn: Connection, queue: str) -> Any:
    """One message of ``queue`` taken through a named exchange (kombu's SimpleQueue) and left
    unacknowledged, as a worker holds a running or an ETA task."""
    simple = conn.SimpleQueue(queue)
    message = simple.get(block=True, timeout=5)
    assert message is not None
    return simple, message


def test_a_dead_consumers_unacked_messages_come_back_once_marked_redelivered(
    connect: Any, redis_server: RedisServer
) -> None:
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    producer = connect()
    producer.SimpleQueue(queue).put({"n": 1})
    producer.SimpleQueue(queue).put({"n": 2})
    holder = connect()
    _simple, first = _take(holder, queue)
    _simple2, second = _take(holder, queue)
    channel = holder.default_channel
    assert client.smembers(channel.owned_key) == {
        first.delivery_tag.encode(),
        second.delivery_tag.encode(),
    }
    second.ack()  # done before the crash: not returned
    assert client.smembers(channel.owned_key) == {first.delivery_tag.encode()}
    # The holder dies: its heartbeat stops (made old here).
    client.zadd(REGISTRY, {channel.inflight_key: time.time() - 120})
    sweeper = connect().default_channel
    client.delete(sweeper.bell(queue))
    assert sweeper.restore_orphans(time.time() - 30) == 1
    assert client.llen(sweeper.bell(queue)) == 1  # rung: an idle consumer takes it at once
    assert sweeper.restore_orphans(time.time() - 30) == 0  # once
    back = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    assert [json.loads(_body(m)) for m in back] == [{"n": 1}]
    assert back[0]["headers"]["redelivered"] is True
    assert client.hget("unacked", first.delivery_tag) is None
    assert client.zscore("unacked_index", first.delivery_tag) is None
    assert not client.exists(channel.owned_key, channel.inflight_key)
    assert client.zscore(REGISTRY, channel.inflight_key) is None
    assert client.hget(RESTORED, queue) == b"1"
    assert client.get(DEAD) == b"1"


def test_a_consumer_closing_returns_what_it_holds_and_leaves_the_registry(
    connect: Any, redis_server: RedisServer
) -> None:
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    dead_before = int(client.get(DEAD) or 0)
    holder = connect()
    _simple, message = _take(holder, queue)
    channel = holder.default_channel
    channel.heartbeat(time.time())
    assert client.zscore(REGISTRY, channel.inflight_key) is not None
    holder.release()  # a worker's warm shutdown closes its channel
    assert client.llen(queue) == 1  # the held message is back, once
    assert client.hget("unacked", message.delivery_tag) is None
    assert client.zscore(REGISTRY, channel.inflight_key) is None
    assert not client.exists(channel.owned_key)
    assert int(client.get(DEAD) or 0) == dead_before  # not a death


def test_a_channel_reuses_one_client_per_pool_and_acks_through_it(
    connect: Any, redis_server: RedisServer
) -> None:
    """The unacked record and the ack go through one client per channel (kombu built a new
    redis-py client for each), on the channel's pool, each in one script (atomic); a new pool
    gets a new client."""
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    holder = connect()
    _simple, message = _take(holder, queue)
    channel = holder.default_channel
    first = channel._create_client()
    with channel.conn_or_acquire() as again:
        assert again is first
    assert first.connection_pool is channel.pool
    assert client.hget("unacked", message.delivery_tag) is not None
    assert client.zscore("unacked_index", message.delivery_tag) is not None
    assert client.sismember(channel.owned_key, message.delivery_tag)
    assert client.llen(channel.inflight_key) == 0  # out of the in-flight list with the record
    before = client.info("commandstats")
    message.ack()
    after = client.info("commandstats")
    assert client.hget("unacked", message.delivery_tag) is None
    assert client.zscore("unacked_index", message.delivery_tag) is None
    assert not client.sismember(channel.owned_key, message.delivery_tag)

    def calls(stats: dict[str, Any], command: str) -> int:
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    # One script, not a MULTI/EXEC of three commands.
    assert calls(after, "eval") == calls(before, "eval") + 1
    assert calls(after, "multi") == calls(before, "multi")
    channel._pool = None  # kombu drops its pool (a reconnect): the next client uses the new one
    fresh = channel._create_client()
    assert fresh is not first and fresh.connection_pool is channel.pool
    assert channel._create_client(asynchronous=True) is not fresh  # the poll's own client


def test_a_process_returns_what_its_broken_connection_held_without_counting_a_death(
    connect: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that broke (a Redis restart): its process's next consumer finds that no
    heartbeat got through for a while and returns what the broken connection's consumer held
    at once, not as a dead consumer; what the new consumer holds stays."""
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    connect().SimpleQueue(queue).put({"n": 2})
    dead_before = int(client.get(DEAD) or 0)
    broken = connect()
    _simple, held = _take(broken, queue)
    old = broken.default_channel
    old.heartbeat(time.time())
    # The connection breaks: nothing beats for a minute (made so here), and Celery drops it
    # without closing its channel.
    then = time.time() - 60
    client.zadd(REGISTRY, {old.inflight_key: then})
    monkeypatch.setattr(ReliableChannel, "process_beat_at", then)  # the process-wide state
    monkeypatch.setattr(ReliableChannel, "connection_broke_at", 0.0)
    new = connect()
    # The new connection's first poll beats, notices the gap, and returns the broken
    # consumer's message at once: it is the next one taken.
    _simple2, again = _take(new, queue)
    assert again.payload == {"n": 1}
    assert again.headers["redelivered"] is True
    channel = new.default_channel
    assert again.delivery_tag == held.delivery_tag  # kombu's tag travels with the message
    assert not client.exists(old.owned_key)
    assert client.smembers(channel.owned_key) == {held.delivery_tag.encode()}
    assert client.zscore(REGISTRY, old.inflight_key) is None
    assert client.llen(queue) == 1  # {"n": 2}, untouched
    channel._alive_at = 0.0
    channel.maybe_refresh_binding_expiry()  # beats again: what it holds stays
    assert client.hget("unacked", again.delivery_tag) is not None
    assert client.zscore(REGISTRY, channel.inflight_key) is not None
    assert int(client.get(DEAD) or 0) == dead_before
    assert ReliableChannel.connection_broke_at == then


def test_after_an_outage_a_worker_reconnecting_later_in_the_backoff_is_not_swept_as_dead(
    connect: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a 30 s outage, another worker may reconnect up to one backoff pause (12 s then)
    after this one, later than the grace period: its broken consumer is spared until then,
    and swept as dead only after it."""
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    dead_before = int(client.get(DEAD) or 0)
    now = time.time()
    broke_at = now - 42  # the last heartbeat before Redis went away for 30 s
    other = connect()
    _take(other, queue)
    client.zadd(REGISTRY, {other.default_channel.inflight_key: broke_at - 2})
    monkeypatch.setattr(ReliableChannel, "connection_broke_at", broke_at)
    mine = connect(inflight_grace=GRACE)
    mine.SimpleQueue(f"{queue}-mine").put({"n": 0})
    _take(mine, f"{queue}-mine")  # consumes: has active queues
    channel = mine.default_channel
    monkeypatch.setattr(ReliableChannel, "process_beat_at", now)  # no gap seen again
    monkeypatch.setattr(ReliableChannel, "process_resumed_at", 0.0)  # a new consumer's case
    channel._alive_at = now
    for beating_for, swept in ((GRACE + 2, False), (GRACE + 20, True)):
        channel._beating_since = now - beating_for  # reconnected that long ago
        channel._swept_at = 0.0
        channel.maybe_refresh_binding_expiry()
        assert (client.zscore(REGISTRY, other.default_channel.inflight_key) is None) is swept
    assert client.llen(queue) == 1  # back once, counted as one death
    assert int(client.get(DEAD) or 0) == dead_before + 1


def test_a_consumer_stuck_through_an_outage_spares_the_others_broken_consumers(
    connect: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose main process was blocked in a call to Redis for the whole outage (a
    reject retrying its connection) never noticed the break: its consumer is the old one, beating
    since long before. Its first heartbeat after the outage finds the gap, and from then on the
    other workers' broken consumers are spared as after a reconnect (chaos-quick's outage run
    swept three of them as dead before)."""
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    now = time.time()
    broke_at = now - 31  # its last heartbeat before the 30 s outage
    # Another worker's (another host's) consumer, silent since the break.
    other = f"{REGISTRY}:other-host:4242:{uuid.uuid4().hex[:12]}"
    client.zadd(REGISTRY, {other: broke_at - 1})
    monkeypatch.setattr(ReliableChannel, "connection_broke_at", 0.0)
    monkeypatch.setattr(ReliableChannel, "process_resumed_at", 0.0)
    mine = connect(inflight_grace=GRACE)
    mine.SimpleQueue(queue).put({"n": 0})
    _take(mine, queue)
    channel = mine.default_channel
    monkeypatch.setattr(ReliableChannel, "process_beat_at", broke_at)  # then nothing for 31 s
    channel._beating_since = now - 600  # the same consumer since long before the outage
    channel._alive_at = broke_at
    channel._swept_at = 0.0
    channel.maybe_refresh_binding_expiry()
    assert ReliableChannel.connection_broke_at == broke_at
    assert client.zscore(REGISTRY, other) is not None, "swept as dead"
    client.zrem(REGISTRY, other)


def test_with_a_global_keyprefix_every_key_is_under_it_and_the_sweep_works(
    connect: Any, redis_server: RedisServer
) -> None:
    """kombu's ``global_keyprefix`` (several apps on one Redis): the queues, the unacked
    records, the consumer registry, in-flight lists and owned sets all live under the prefix,
    and a dead consumer's message comes back to the prefixed queue."""
    client = redis_server.client(0)
    prefix = f"app-{uuid.uuid4().hex[:6]}:"
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    before = set(client.keys("*"))
    connect(global_keyprefix=prefix).SimpleQueue(queue).put({"n": 1})
    holder = connect(global_keyprefix=prefix)
    _simple, message = _take(holder, queue)
    channel = holder.default_channel
    channel.heartbeat(time.time())
    written = {key.decode() for key in set(client.keys("*")) - before}
    assert written and all(key.startswith(prefix) for key in written), written
    assert client.smembers(prefix + channel.owned_key) == {message.delivery_tag.encode()}
    assert client.zscore(prefix + REGISTRY, channel.inflight_key) is not None
    client.zadd(prefix + REGISTRY, {channel.inflight_key: time.time() - 120})  # it died
    sweeper = connect(global_keyprefix=prefix).default_channel
    assert sweeper.restore_orphans(time.time() - 30) == 1
    assert client.llen(prefix + queue) == 1
    assert client.hget(prefix + "unacked", message.delivery_tag) is None
    assert client.zscore(prefix + REGISTRY, channel.inflight_key) is None
    assert {key.decode() for key in set(client.keys("*")) - before} <= written | {
        prefix + queue,
        prefix + DEAD,
        prefix + RESTORED,
    }


def test_a_dead_consumer_holding_an_unreadable_message_does_not_strand_the_others(
    connect: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweep goes on past a consumer whose in-flight list holds something it cannot
    route (logged, kept for a person to look at): the next dead consumer's message is back."""
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    holder = connect()
    _simple, _held = _take(holder, queue)
    channel = holder.default_channel
    broken = f"{REGISTRY}:elsewhere:1:{uuid.uuid4().hex[:12]}"
    client.lpush(broken, b"not a message")
    old = time.time() - 120
    client.zadd(REGISTRY, {broken: old - 1, channel.inflight_key: old})  # both dead
    sweeper = connect().default_channel
    with caplog.at_level("ERROR", logger="worker_app.broker"):
        assert sweeper.restore_orphans(time.time() - 30) == 1
    assert client.llen(queue) == 1
    assert client.lrange(broken, 0, -1) == [b"not a message"]
    assert any(broken in record.getMessage() for record in caplog.records)
    client.delete(broken)
    client.zrem(REGISTRY, broken)


def test_a_publish_rings_its_queues_bell_which_stays_small_and_goes_with_the_queue(
    connect: Any, redis_server: RedisServer
) -> None:
    """Every publish through the transport pushes to its queue's bell (what an idle consumer
    waits on, for every queue and priority step at once); the bell keeps at most ``BELLS``
    rings and is deleted with its queue."""
    from worker_app.broker_transport import BELLS  # noqa: PLC0415

    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    conn = connect()
    bell = conn.default_channel.bell(queue)
    simple = conn.SimpleQueue(queue)
    simple.put({"n": 0}, priority=9)
    assert client.llen(bell) == 1
    for n in range(BELLS + 10):
        simple.put({"n": n})
    assert client.llen(bell) == BELLS
    simple.queue(conn.default_channel).delete()
    assert not client.exists(bell)


def test_a_live_consumers_messages_are_never_restored_however_old(
    connect: Any, redis_server: RedisServer
) -> None:
    client = redis_server.client(0)
    queue = f"hb-{uuid.uuid4().hex[:6]}"
    connect().SimpleQueue(queue).put({"n": 1})
    holder = connect(visibility_timeout=1)
    _simple, message = _take(holder, queue)
    channel = holder.default_channel
    channel.heartbeat(time.time())
    time.sleep(1.5)  # past the visibility timeout
    channel.heartbeat(time.time())  # alive: its messages' unacked timestamps move on
    other = connect(visibility_timeout=1).default_channel
    other.qos.restore_visible(interval=1)
    assert other.restore_orphans(time.time() - 30) == 0
    assert client.llen(queue) == 0
    assert client.hget("unacked", message.delivery_tag) is not None
    # Without heartbeats (a worker without this transport), the visibility timeout is the
    # backstop: the same message goes back.
    time.sleep(1.5)
    other.qos.restore_visible(interval=1)
    assert client.llen(queue) == 1


def _body(message: dict[str, Any]) -> str:
    import base64  # noqa: PLC0415

    body = message["body"]
    return base64.b64decode(body).decode() if message["properties"].get("body_encoding") else body


def _holds(state: Any, token: str) -> bool:
    return any(token.encode() in entry for entry in state.hvals("unacked"))


def test_a_killed_workers_running_and_countdown_tasks_run_again_within_the_grace_period(
    start_pool_worker: StartWorker, client_app: Any, state: Any
) -> None:
    """SIGKILL of a worker's main process (and its pool) while it runs one task and holds a
    countdown: both run again within grace + 15 s, with the one-hour visibility timeout."""
    worker = start_pool_worker("low", "--concurrency", "1", node="low-killed@test")
    running, countdown = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    # The countdown first: Celery raises its prefetch for a held ETA message, and with one
    # process and a prefetch of one the running task would leave no room for it.
    client_app.send_task("examples.record", args=[countdown], queue="low", countdown=20)
    wait_until(lambda: _holds(state, countdown), timeout=15, what="the countdown held")
    client_app.send_task("examples.sleepy", args=[running, 20], queue="low")
    wait_until(lambda: records(state, f"started:{running}"), timeout=30, what="the task running")
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    killed = time.monotonic()
    after = start_pool_worker("low", "--concurrency", "2", node="low-after@test")
    wait_until(lambda: len(records(state, f"started:{running}")) == 2, timeout=GRACE + 30,
               interval=0.2, what="the running task again")  # fmt: skip
    again = time.monotonic() - killed
    ran = wait_until(lambda: records(state, f"ran:{countdown}"), timeout=GRACE + 30,
                     interval=0.2, what="the countdown task")  # fmt: skip
    back = time.monotonic() - killed
    print(f"running task again {again:.1f} s, countdown task ran {back:.1f} s after the kill")
    assert again <= GRACE + 15, again
    assert back <= GRACE + 15, back
    assert ran == ["low low-after@test"]
    os.killpg(after.process.pid, signal.SIGKILL)  # the re-run sleeps; no need to wait for it
    after.process.wait()


@pytest.mark.parametrize(
    ("pool", "seconds", "grace"),
    [
        pytest.param("default", 70, GRACE, id="70s-task-grace-10s"),
        # The long form (make chaos): a five-minute task, the 60 s grace of the issue.
        pytest.param("low", 300, 60, id="5min-task-grace-60s",
                     marks=[pytest.mark.long, pytest.mark.timeout(900)]),
    ],
)  # fmt: skip
def test_a_live_worker_keeps_a_task_longer_than_the_timeouts_and_a_distant_countdown(
    start_pool_worker: StartWorker, client_app: Any, state: Any, redis_server: RedisServer,
    pool: str, seconds: int, grace: int,
) -> None:  # fmt: skip
    """On a live worker, a task that runs for several grace periods and past a 60 s
    visibility timeout runs once, and a countdown of two hours stays with it (the backstop
    never fires, however often it runs)."""
    worker = start_pool_worker(
        pool, "--concurrency", "2", node=f"{pool}-live@test",
        WORKER_APP_VISIBILITY_TIMEOUT="60", WORKER_APP_CONSUMER_GRACE=str(grace),
    )  # fmt: skip
    long, distant = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    # The countdown first (prefetch: see the kill test above).
    client_app.send_task("examples.record", args=[distant], queue=pool, countdown=7200)
    wait_until(lambda: _holds(state, distant), timeout=15, what="the countdown held")
    client_app.send_task("examples.sleepy", args=[long, seconds], queue=pool)
    wait_until(lambda: records(state, f"started:{long}"), timeout=15, what="the long task")
    began = time.monotonic()
    backstops = 0
    while not records(state, f"finished:{long}"):
        assert time.monotonic() - began < seconds + 60, "the long task never finished"
        time.sleep(min(31.0, max(1.0, seconds + 1 - (time.monotonic() - began))))
        if time.monotonic() - began < 61:
            continue
        # What every consumer's backstop does (kombu's restore of the messages unacked for
        # longer than the visibility timeout), run now: the live worker's are never due.
        with Connection(redis_server.url(0), transport="kombu.transport.redis:Transport",
                        transport_options={"visibility_timeout": 60}) as stock:  # fmt: skip
            stock.default_channel.qos.restore_visible(interval=1)
        backstops += 1
        assert _holds(state, distant)
        assert not any(distant.encode() in m for m in state.lrange(pool, 0, -1))
    assert backstops >= 1
    assert len(records(state, f"started:{long}")) == 1
    assert records(state, f"ran:{distant}") == []
    assert _holds(state, distant)
    # Leave the queue to the next tests: the worker stops (handing the countdown back), and
    # the countdown goes.
    worker.stop()
    state.delete(*state.keys(f"{pool}*"))


def test_a_mixed_fleet_during_a_rolling_upgrade_loses_and_doubles_nothing(
    start_pool_worker: StartWorker, worker_env: dict[str, str], client_app: Any, state: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The upgrade path: a stock Celery worker (kombu's own transport, no heartbeats) and a
    worker_app worker consume one queue under load, with the visibility timeout the old fleet
    needed (above its longest task + 60 s); the stock worker is then stopped (warm) and a
    second worker_app worker takes its place, still under load. Every task runs exactly once,
    short ones, long ones (past the grace period) and countdowns alike."""
    fleet = {
        "WORKER_APP_VISIBILITY_TIMEOUT": "120", "WORKER_APP_MAX_TIME_LIMIT": "50",
        "WORKER_APP_TASK_MODULES": "worker_app.examples,tests.support.fleet_tasks",
    }  # fmt: skip
    state.delete(fleet_tasks.RUNS, fleet_tasks.NODES)
    stock = start_worker(
        ["celery", "-A", "tests.support.stock_celery", "worker", "-Q", "default", "-c", "2",
         "-n", "stock@test", "-O", "fair", "--without-gossip", "--without-mingle", "-l", "INFO"],
        {**worker_env, **fleet, "STOCK_CELERY_TASK_MODULES": "tests.support.fleet_tasks"},
        tmp_path / "stock.log",
    )  # fmt: skip
    try:
        start_pool_worker("default", "--concurrency", "2", node="default-new1@test", **fleet)
        published: list[str] = []

        def publish(count: int) -> None:
            for n in range(len(published), len(published) + count):
                long, later = n % 40 == 7, n % 25 == 3
                result = client_app.send_task(
                    "fleet.work", args=[2 * GRACE if long else 0.02], queue="default",
                    priority=n % 10, countdown=GRACE + 5 if later else None,
                )  # fmt: skip
                published.append(result.id)
                time.sleep(0.02)

        publish(200)
        stock.stop(timeout=60)  # warm: it finishes what runs and hands back what it holds
        start_pool_worker("default", "--concurrency", "2", node="default-new2@test", **fleet)
        publish(200)
        wait_until(lambda: state.hlen(fleet_tasks.RUNS) == len(published), timeout=180,
                   interval=0.5, what="every task run")  # fmt: skip
        time.sleep(GRACE + 5)  # a late double would show here
        runs = {k.decode(): int(v) for k, v in state.hgetall(fleet_tasks.RUNS).items()}
    finally:
        stock.stop(timeout=5)
    assert sorted(runs) == sorted(published)
    doubled = {task_id: n for task_id, n in runs.items() if n != 1}
    assert doubled == {}
    nodes = Counter(v.decode().split("@")[0] for v in state.hvals(fleet_tasks.NODES))
    print(f"mixed fleet: {len(published)} tasks, runs by node {dict(nodes)}")
    assert set(nodes) == {"stock", "default-new1", "default-new2"}, nodes


def test_a_task_running_through_a_quick_redis_restart_runs_again_and_finishes(
    start_pool_worker: StartWorker, client_app: Any, state: Any, redis_server: RedisServer
) -> None:
    """A graceful Redis restart (SIGTERM, started again at once: what supervisorctl restart
    does, e.g. a certificate rotation) while tasks run: Celery cancels the running tasks on the
    connection loss (worker_cancel_long_running_tasks_on_connection_loss), so their messages
    must come back and every task run again to the end — never be dropped."""
    worker = start_pool_worker("high", "--concurrency", "4", node="high-restart@test")
    tokens = [uuid.uuid4().hex[:8] for _ in range(16)]
    for token in tokens:
        client_app.send_task("examples.sleepy", args=[token, 1.0], queue="high")
    wait_until(lambda: sum(bool(records(state, f"started:{t}")) for t in tokens) >= 6,
               timeout=30, what="tasks running")  # fmt: skip
    state.save()  # this module's Redis has no persistence: what the restart must keep
    redis_server.stop()
    redis_server.start_again()
    finished = wait_until(
        lambda: all(records(state, f"finished:{t}") for t in tokens) or worker.process.poll(),
        timeout=GRACE + 30, interval=0.2, what="every task finished",
    )  # fmt: skip
    assert finished is True, worker.log()[-3000:]
    assert [t for t in tokens if len(records(state, f"finished:{t}")) != 1] == []
