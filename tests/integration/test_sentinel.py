"""worker_app on Redis Sentinel: real workers on a ``sentinel://`` URL survive a failover (the
primary SIGKILLed mid-stream) without losing a task whose publish the replicas confirmed; the
DLQ and ``worker-app dlq`` work through Sentinel and keep their entries across a failover; a
publish with ``WORKER_APP_PUBLISH_MIN_REPLICAS`` waits for the replicas (Redis WAIT) or fails
clearly. A primary, two replicas and three Sentinels (tests/support/sentinel.py), all real."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.sentinel import (
    CELERY_PASSWORD,
    SENTINEL_PASSWORD,
    SENTINEL_USER,
    SentinelCluster,
    start_cluster,
)
from tests.support.tls import CertificateAuthority
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, start_worker
from worker_app.broker_transport import PublishNotReplicatedError
from worker_app.factory import create_app
from worker_app.metrics.tls_expiry import context_for, endpoints_of, probe
from worker_app.settings import Settings

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
RAN = "worker_app:examples:ran:"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A primary, two replicas and three Sentinels (quorum 2), stopped after the test."""
    deployment = start_cluster(tmp_path / "sentinel")
    yield deployment
    deployment.stop()


@pytest.fixture
def start_sentinel_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``worker-app worker --pool NAME`` with an environment; stopped after the test."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], pool: str, *extra: str) -> WorkerProcess:
        args = ["worker_app.cli", "worker", "--pool", pool, "--no-events", "--metrics-port", "0"]
        args += [*extra, "--without-gossip", "--without-mingle", "--without-heartbeat"]
        log = tmp_path / f"{pool}-{len(started)}.log"
        full_env = {
            "WORKER_APP_TASK_MODULES": "worker_app.examples",
            "WORKER_APP_LOG_FORMAT": "text",
            "WORKER_APP_CONSUMER_GRACE": "10",
            "WORKER_APP_METRICS_DIR": str(tmp_path / "metrics"),
            **env,
        }
        worker = start_worker(args, full_env, log, ready_text="ready.")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def producer(env: dict[str, str]) -> Any:
    """A producer app (an application server) with this environment."""
    return create_app(Settings.from_env({"WORKER_APP_TASK_MODULES": "", **env}))


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``worker-app ARGS`` in a fresh process with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "worker_app.cli", *args],
        env={**_base_env(), "WORKER_APP_LOG_FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _base_env() -> dict[str, str]:
    import os  # noqa: PLC0415

    return {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_APP_", "CELERY_"))}


def test_a_worker_on_sentinel_survives_a_failover_mid_stream_without_losing_a_task(
    cluster: SentinelCluster, redis_server: RedisServer, start_sentinel_worker: StartWorker
) -> None:
    """Hundreds of tasks published continuously (each publish waits for one replica); the
    primary is SIGKILLed; Sentinel promotes a replica; the worker reconnects to it; every task
    whose publish returned runs (duplicates are counted and reported, not failures)."""
    ledger = redis_server.client(0)  # the tasks' side effects, outside the failover
    env = {
        **cluster.env(),
        "WORKER_APP_REDIS_URL": redis_server.url(0),
        "WORKER_APP_PUBLISH_MIN_REPLICAS": "1",
        "WORKER_APP_PUBLISH_REPLICA_TIMEOUT_MS": "1000",
    }
    worker = start_sentinel_worker(env, "default", "--concurrency", "2")
    app = producer(env)
    run = uuid.uuid4().hex[:8]
    confirmed: dict[str, float] = {}  # token -> when its publish returned
    failed: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        count = 0
        while not stop.is_set():
            token = f"{run}-{count}"
            count += 1
            try:
                app.send_task("examples.record", args=[token], queue="default")
            except Exception as exc:  # any refusal: not confirmed, counted
                failed.append(f"{token} {type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue
            confirmed[token] = time.time()
            time.sleep(0.005)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        wait_until(lambda: len(confirmed) >= 300, timeout=30, what="300 publishes")
        wait_until(lambda: ledger.exists(f"{RAN}{run}-0"), timeout=30, what="a task ran")
        killed_at = time.time()
        old = cluster.kill_primary()
        new, promotion = cluster.wait_for_promotion(old)
        confirmed_at_kill = sum(1 for at in confirmed.values() if at < killed_at)
        wait_until(
            lambda: sum(1 for at in confirmed.values() if at > killed_at + promotion) >= 200,
            timeout=30,
            what="200 publishes to the new primary",
        )
    finally:
        stop.set()
        publisher.join(timeout=30)
    tokens = sorted(confirmed)

    def runs() -> dict[str, int]:
        with ledger.pipeline(transaction=False) as pipe:
            for token in tokens:
                pipe.llen(f"{RAN}{token}")
            return dict(zip(tokens, pipe.execute(), strict=True))

    def all_ran() -> bool:
        return all(count > 0 for count in runs().values())

    try:
        wait_until(all_ran, timeout=45, interval=0.5, what="every confirmed task ran")
    except AssertionError:
        missing = [token for token, count in runs().items() if not count]
        pytest.fail(
            f"{len(missing)} of {len(tokens)} confirmed tasks never ran: {missing[:20]}\n"
            f"{cluster.logs()}"
        )
    assert worker.process.poll() is None, worker.log()[-5000:]
    assert "Unrecoverable error" not in worker.log()
    counts = runs()
    duplicates = sum(count - 1 for count in counts.values() if count > 1)
    # Published once the Sentinels named the new primary: taken from it.
    on_new = [token for token, at in confirmed.items() if at > killed_at + promotion]
    first_run = min(
        float(ledger.lindex(f"{RAN}{token}", 0).split(b" ", 1)[0])  # type: ignore[union-attr,arg-type]
        for token in on_new
    )
    print(
        f"\nsentinel failover: {len(tokens)} tasks confirmed ({confirmed_at_kill} before the "
        f"kill), {len(failed)} publishes refused during the failover, 0 lost, {duplicates} "
        f"duplicate run(s); {old.name} killed, {new.name} promoted after {promotion:.2f} s; "
        f"first task run on the new primary {first_run - killed_at:.2f} s after the kill"
    )


def test_dead_letters_through_sentinel_survive_a_failover_and_replay(
    cluster: SentinelCluster, start_sentinel_worker: StartWorker, tmp_path: Path
) -> None:
    """The DLQ, the examples' records, ``worker-app dlq`` and ``worker-app exporter`` all reach
    Redis through Sentinel; a dead letter written (and replicated) before a failover is listed,
    exported and replayed after it."""
    env = cluster.env()
    worker = start_sentinel_worker(env, "default", "--concurrency", "1")
    port = free_port()
    exporter = start_worker(
        # The exporter asks the workers for their queues (the ``stats`` broadcast) every
        # second, through the failover: the worker answers (CI once saw a reply that could not
        # be serialized, the Sentinels' options, logged over and over while a replay waited).
        [
            "worker_app.cli",
            "exporter",
            "--port",
            str(port),
            "--no-events",
            "--inspect-interval",
            "1",
        ],
        {**env, "WORKER_APP_LOG_FORMAT": "text"},
        tmp_path / "exporter.log",
        ready_text="exporter on http://",
    )

    def exported(name: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            for line in page.read().decode().splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
        return None

    app = producer(env)
    token = uuid.uuid4().hex[:8]
    app.send_task("examples.always_fails", args=[token], queue="default")

    def listed() -> list[dict[str, Any]]:
        done = cli(env, "dlq", "list", "--json")
        assert done.returncode == 0, done.stderr
        entries: list[dict[str, Any]] = json.loads(done.stdout)
        return [e for e in entries if e["args"] == [token]]

    (entry,) = wait_until(listed, timeout=30, what="the dead letter, listed through Sentinel")
    assert entry["task_name"] == "examples.always_fails"
    assert exported("worker_app_exporter_broker_up") == 1
    assert exported("worker_app_dlq_entries") == 1
    master = cluster.master_client()
    assert master.wait(2, 5000) == 2  # the entry is on both replicas
    old = cluster.kill_primary()
    cluster.wait_for_promotion(old)
    assert [e["id"] for e in listed()] == [entry["id"]]
    # The exporter's client found the new primary (a scrape may fail while it does).
    wait_until(
        lambda: exported("worker_app_exporter_broker_up") == 1, timeout=20, what="exporter up"
    )
    assert exported("worker_app_dlq_entries") == 1
    # The worker answers the exporter's broadcasts: its queue and its one pool process.
    wait_until(
        lambda: exported('celery_active_process_count{queue_name="default"}') == 1,
        timeout=30,
        what="the worker's pool process, counted through the remote control",
    )

    master = cluster.master_client()
    master.set(f"worker_app:examples:fixed:{token}", 1)
    done = cli(env, "dlq", "replay", entry["id"])
    assert done.returncode == 0, done.stderr
    assert f"replayed {entry['id']}" in done.stdout
    # The worker reconnects with Celery's backoff (pauses of 2, 4, 6 ... s): on a loaded machine
    # its first attempt after the promotion can come late (CI once waited over 40 s).
    try:
        wait_until(
            lambda: master.llen(f"worker_app:examples:succeeded:{token}"),
            timeout=90,
            what="the replayed task ran on the new primary",
        )
    except AssertionError as failed:
        raise AssertionError(f"{failed}\nthe worker's log ends:\n{worker.log()[-4000:]}") from None
    assert listed() == []
    assert exported("worker_app_dlq_entries") == 0
    exporter.stop()


def test_a_publish_waits_for_replicas_or_fails_clearly(cluster: SentinelCluster) -> None:
    """With WORKER_APP_PUBLISH_MIN_REPLICAS=1 a publish returns once a replica has it; with
    every replica stopped (SIGSTOP) it raises PublishNotReplicatedError after the timeout,
    through sentinel:// and through redis:// to the primary alike."""
    primary = cluster.primary()
    direct = f"redis://celery:{CELERY_PASSWORD}@127.0.0.1:{primary.port}/0"
    replicas = cluster.replicas()
    for url_env in (cluster.env(), {"CELERY_BROKER_URL": direct}):
        env = {
            **url_env,
            "WORKER_APP_PUBLISH_MIN_REPLICAS": "1",
            "WORKER_APP_PUBLISH_REPLICA_TIMEOUT_MS": "500",
        }
        app = producer(env)
        app.send_task("examples.record", args=["replicated"], queue="default")
        for node in replicas:
            node.pause()
        try:
            started = time.monotonic()
            with pytest.raises(PublishNotReplicatedError) as raised:
                app.send_task("examples.record", args=["not-replicated"], queue="default")
            waited = time.monotonic() - started
        finally:
            for node in replicas:
                node.resume()
        assert 0.5 <= waited < 5, waited
        assert "only 0 of the 1 replica(s)" in str(raised.value)
        assert "WORKER_APP_PUBLISH_MIN_REPLICAS" in str(raised.value)
        cluster.wait_replicas_in_sync(2)
        app.send_task("examples.record", args=["replicated-again"], queue="default")
        # A batch of publishes (kombu's Producer.batch(): one round trip) waits too, once.
        for node in replicas:
            node.pause()
        try:
            with (
                pytest.raises(PublishNotReplicatedError),
                app.producer_or_acquire() as batch_producer,
                batch_producer.batch(),
            ):
                for n in range(3):
                    app.send_task("examples.record", args=[f"batched-{n}"], queue="default",
                                  producer=batch_producer)  # fmt: skip
        finally:
            for node in replicas:
                node.resume()
        cluster.wait_replicas_in_sync(2)
    # Every publish reached the primary (the refused ones too: WAIT does not undo a write).
    assert cluster.node_client(primary).llen("default") == 12


def test_a_graceful_failover_is_a_reconnect_not_a_crash(
    cluster: SentinelCluster, redis_server: RedisServer, start_sentinel_worker: StartWorker
) -> None:
    """SENTINEL FAILOVER demotes the primary while the worker waits on it: the worker
    reconnects to the new primary and runs the next task; the producer's pooled connection to
    the demoted primary (told READONLY) reconnects too; results (Celery's Sentinel result
    backend, given the master name by configure) follow the new primary."""
    ledger = redis_server.client(0)
    env = {
        **cluster.env(),
        "WORKER_APP_REDIS_URL": redis_server.url(0),
        "CELERY_RESULT_BACKEND": cluster.url(1),
    }
    worker = start_sentinel_worker(env, "default", "--concurrency", "1")
    app = producer(env)
    token = uuid.uuid4().hex[:8]
    before = app.send_task("examples.record", args=[f"{token}-before"], queue="default")
    assert before.get(timeout=30) == f"{token}-before"
    # The remote control's stats (Flower's worker page, the exporter's consumer counts) carry
    # the broker's transport options: they serialize, without the Sentinels' password.
    stats = app.control.inspect(timeout=5).stats() or {}
    assert [s["pool"]["max-concurrency"] for s in stats.values()] == [1], stats
    sentinel_kwargs = next(iter(stats.values()))["broker"]["transport_options"]["sentinel_kwargs"]
    assert sentinel_kwargs["username"] == SENTINEL_USER
    assert SENTINEL_PASSWORD not in json.dumps(stats)
    time.sleep(1.5)  # the worker waits on a bell (a blocked BRPOP) of the primary
    old = cluster.primary()
    sentinel = cluster.sentinels[0]
    with redis.Redis(
        host="127.0.0.1", port=sentinel.port, username=SENTINEL_USER, password=SENTINEL_PASSWORD
    ) as client:
        client.execute_command("SENTINEL", "FAILOVER", cluster.master)
    cluster.wait_for_promotion(old)
    cluster.wait_for_role(old, "slave")  # demoted: the worker's connections to it answer so
    # The producer's pooled connection to the old primary is told READONLY: it reconnects. The
    # result is read from the backend, which follows the new primary. Not through get(): Celery's
    # result consumer, reconnecting after the failover, reads stored results before it subscribes
    # again, and get() missed a result published in between in 2 of 4 CI runs (the task had run,
    # its result was stored; an open finding, docs/ha.md).
    after = app.send_task("examples.record", args=[f"{token}-after"], queue="default")

    def stored() -> bool:
        return app.backend.get_task_meta(after.id).get("status") == "SUCCESS"

    try:
        wait_until(stored, timeout=90, what="the result of the task after the failover")
    except AssertionError as failed:
        raise AssertionError(
            f"{failed} (it ran: {bool(ledger.exists(RAN + token + '-after'))})\n"
            f"the worker's log:\n{worker.log()[-6000:]}\n"
            f"the Sentinels' logs:\n{cluster.logs()[-3000:]}"
        ) from None
    assert app.backend.get_task_meta(after.id)["result"] == f"{token}-after"
    assert ledger.exists(f"{RAN}{token}-after")
    assert worker.process.poll() is None
    assert "Unrecoverable error" not in worker.log()


def test_a_demoted_primary_is_a_broken_connection_to_the_transport(tmp_path: Path) -> None:
    """A primary turned into a replica (REPLICAOF) answers a consumer waiting on it with
    UNBLOCKED and a publish with READONLY: the transport raises a connection error (kombu and
    Celery reconnect, and through Sentinel find the new primary), not a channel error."""
    from kombu import Connection  # noqa: PLC0415

    from tests.support.redis_server import start_redis  # noqa: PLC0415

    primary = start_redis(tmp_path / "primary")
    other = start_redis(tmp_path / "other")
    conn = Connection(primary.url(0), transport="worker_app.broker_transport:Transport")
    try:
        queue = conn.SimpleQueue(f"demoted-{uuid.uuid4().hex[:6]}")
        with pytest.raises(Exception) as empty:  # kombu's Empty
            queue.get(block=True, timeout=0.3)  # a scan, then the consumer waits on a bell
        assert type(empty.value).__name__ == "Empty"
        timer = threading.Timer(
            0.5, lambda: primary.client().execute_command("REPLICAOF", "127.0.0.1", other.port)
        )
        timer.start()
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError, match=r"became a replica.*UNBLOCKED"):
            queue.get(block=True, timeout=5)
        assert time.monotonic() - started < 4  # not the timeout: Redis answered UNBLOCKED
        timer.join()
        channel = conn.default_channel
        with pytest.raises(redis.ConnectionError, match=r"became a replica.*read only"):
            channel._put(queue.queue.name, {"body": "x", "properties": {}})
        queue.close()
    finally:
        conn.release()
        primary.stop()
        other.stop()


def test_a_sentinel_url_without_a_master_name_stops_the_commands_clearly() -> None:
    """``worker-app worker`` and ``worker-app dlq`` with a sentinel:// URL and no
    WORKER_APP_SENTINEL_MASTER exit with an error naming the variable."""
    env = {"CELERY_BROKER_URL": "sentinel://celery:secret@127.0.0.1:1/0"}
    for args in (("dlq", "list"), ("worker", "--pool", "default")):
        done = cli(env, *args)
        assert done.returncode != 0
        assert "WORKER_APP_SENTINEL_MASTER must name the Sentinel master" in done.stderr


def test_an_ack_on_a_channel_closed_by_a_broken_connection_is_a_connection_error(
    redis_server: RedisServer,
) -> None:
    """Celery acknowledges a task that finished while its broker connection broke on the old
    channel, after it collected the connection. That ack is a connection error (Celery logs
    "Couldn't ack" and goes on), not an AttributeError that stops the worker ("Unrecoverable
    error", seen once in the failover test); the message is not lost."""
    from kombu import Connection  # noqa: PLC0415

    transport = "worker_app.broker_transport:Transport"
    name = f"collected-{uuid.uuid4().hex[:6]}"
    conn = Connection(redis_server.url(0), transport=transport)
    queue = conn.SimpleQueue(name)
    queue.put({"n": 1})
    message = queue.get(block=True, timeout=5)
    conn.collect()  # what Celery does with a connection that broke
    with pytest.raises(redis.ConnectionError, match="broke and was closed"):
        message.ack()
    # Returned to its queue when the channel closed (Redis was reachable here; when it is
    # not, the process's next consumer returns it).
    client = redis_server.client(0)
    assert client.llen(name) == 1


def test_redbeat_reaches_the_master_through_sentinel_across_a_failover(
    cluster: SentinelCluster,
) -> None:
    """``worker_app.sentinel.redbeat_options`` (for the Beat wiring: ``redbeat_redis_url`` and
    ``redbeat_redis_options``) give RedBeat a client of the master that follows a failover."""
    from celery import Celery  # noqa: PLC0415
    from redbeat.schedulers import get_redis  # noqa: PLC0415

    from worker_app.sentinel import SentinelConfig, redbeat_options  # noqa: PLC0415

    url, options = redbeat_options(
        cluster.url(0), SentinelConfig(cluster.master, SENTINEL_USER, SENTINEL_PASSWORD)
    )
    app = Celery("beat", set_as_current=False)
    app.conf.redbeat_redis_url = url
    app.conf.redbeat_redis_options = options
    client = get_redis(app)
    client.set("beat-probe", "before")
    assert cluster.master_client().wait(2, 5000) == 2
    old = cluster.kill_primary()
    cluster.wait_for_promotion(old)
    assert wait_until(lambda: _read(client, "beat-probe"), timeout=20) == "before"
    client.set("beat-probe", "after")
    assert cluster.master_client().get("beat-probe") == b"after"


def _read(client: Any, key: str) -> Any:
    try:
        return client.get(key)
    except redis.ConnectionError:
        return None


def test_sentinel_over_tls_workers_dead_letters_and_a_failover(
    tmp_path: Path, start_sentinel_worker: StartWorker
) -> None:
    """``WORKER_APP_SENTINEL_TLS=yes``: every data node and Sentinel listens only with TLS and
    requires client certificates, replication and monitoring run over TLS. A worker on the
    ``sentinel://`` URL runs tasks, dead-letters one that ``worker-app dlq list`` reads through
    the Sentinels, and after the primary is SIGKILLed runs the next task on the new primary;
    a worker whose CA does not sign the certificates stops with one line."""
    ca = CertificateAuthority.create(tmp_path / "ca")
    cluster = start_cluster(tmp_path / "tls-sentinel", tls=ca)
    try:
        env = cluster.env()
        worker = start_sentinel_worker(env, "default", "--concurrency", "1")
        app = producer(env)
        master = cluster.master_client()
        token = uuid.uuid4().hex[:8]
        app.send_task("examples.record", args=[f"{token}-before"], queue="default")
        wait_until(lambda: master.exists(f"{RAN}{token}-before"), timeout=30, what="a task ran")
        app.send_task("examples.always_fails", args=[token], queue="default")

        def listed() -> list[dict[str, Any]]:
            done = cli(env, "dlq", "list", "--json")
            assert done.returncode == 0, done.stderr
            return [e for e in json.loads(done.stdout) if e["args"] == [token]]

        wait_until(listed, timeout=30, what="the dead letter, listed through TLS Sentinels")
        # The exporter's certificate probes find every Sentinel and data node and verify each.
        settings = Settings.from_env(env)
        endpoints = endpoints_of([settings.broker_url], settings.sentinel)
        assert sorted((e.role, e.port) for e in endpoints) == sorted(
            [("sentinel", n.port) for n in cluster.sentinels]
            + [("redis", n.port) for n in cluster.data]
        )
        assert settings.sentinel is not None and settings.sentinel.tls is not None
        context = context_for(settings.sentinel.tls)
        assert all(probe(e, context).not_after for e in endpoints)
        old = cluster.kill_primary()
        cluster.wait_for_promotion(old)
        app.send_task("examples.record", args=[f"{token}-after"], queue="default")
        master = cluster.master_client()
        try:
            wait_until(
                lambda: master.exists(f"{RAN}{token}-after"), timeout=90, what="a task ran after"
            )
        except AssertionError as failed:
            raise AssertionError(f"{failed}\nthe worker's log:\n{worker.log()[-6000:]}") from None
        other = CertificateAuthority.create(tmp_path / "other-ca", name="another CA")
        refused = cli(
            {**env, "WORKER_APP_REDIS_TLS_CA_FILE": str(other.cert_file)},
            "worker", "--pool", "default", "--metrics-port", "0",
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr[-2000:]
        sentinel_port = cluster.sentinels[0].port
        assert (
            f"TLS to Redis at 127.0.0.1:{sentinel_port} refused: the server's certificate is "
            f"not signed by a CA in the CA file {other.cert_file}"
        ) in refused.stderr
    finally:
        cluster.stop()
