"""TLS between the clients and Redis (issue 23, client side): ``rediss://`` keeps the no-loss
transport, the server's certificate is verified against the configured CA and its name
checked, a client certificate is presented where the server requires one, and every refusal is
one line naming the host and the cause. Against real redis-servers with TLS (``--port 0``: no
plain TCP) and a throwaway CA made at test time."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.integration.conftest import StartWorker, records
from tests.support.ports import free_port
from tests.support.prom import scrape, total
from tests.support.redis_server import RedisServer, ServerTLS, start_redis
from tests.support.tls import CertificateAuthority
from tests.support.waiting import wait_until
from tests.support.workers import start_worker
from worker_app.broker_transport import ReliableChannel, Transport
from worker_app.metrics.tls_expiry import Endpoint, context_for, probe
from worker_app.tls import TLSConfig

pytestmark = pytest.mark.integration

GRACE = 10  # WORKER_APP_CONSUMER_GRACE of this module's workers (its minimum)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """The CA that signs the test servers' and clients' certificates."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """A CA that signed none of them."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("other-ca"), "other CA")


@pytest.fixture(scope="module")
def redis_server(
    ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """This module's Redis: TLS only (``--port 0``), client certificates required."""
    tls = ServerTLS(ca, ca.issue("redis-server"), auth_clients="yes")
    server = start_redis(Path(tmp_path_factory.mktemp("redis-tls")), tls=tls)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_env(redis_server: RedisServer) -> dict[str, str]:
    """The TLS settings of a host that trusts the test CA and has a client certificate."""
    assert redis_server.tls is not None and redis_server.client_cert is not None
    return {
        "WORKER_APP_REDIS_TLS_CA_FILE": str(redis_server.tls.ca.cert_file),
        "WORKER_APP_REDIS_TLS_CERT_FILE": str(redis_server.client_cert.cert_file),
        "WORKER_APP_REDIS_TLS_KEY_FILE": str(redis_server.client_cert.key_file),
    }


@pytest.fixture(scope="module")
def worker_env(worker_env: dict[str, str], tls_env: dict[str, str]) -> dict[str, str]:
    """Workers and producers over ``rediss://`` (broker and result backend), a 10 s grace."""
    assert worker_env["CELERY_BROKER_URL"].startswith("rediss://")
    return {**worker_env, **tls_env, "WORKER_APP_CONSUMER_GRACE": str(GRACE)}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``worker-app ARGS`` in a fresh process with only ``env``'s worker_app settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_APP_", "CELERY_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker_app.cli", *args],
        env={**base, "WORKER_APP_LOG_FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def one_line_refusal(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The single error line of a refused command (exit 2), which must contain ``expected``."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_worker_over_rediss_runs_tasks_on_the_reliable_transport(
    start_pool_worker: StartWorker, client_app: Any, state: Any
) -> None:
    """A task published over TLS runs and its result comes back over TLS; the consumer is
    worker_app's transport: its heartbeat registry and consumer keys are in Redis."""
    with client_app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)
        assert conn.ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED  # never kombu's CERT_NONE
    start_pool_worker("low", "--concurrency", "1", node="low-tls@test")
    token = uuid.uuid4().hex[:8]
    result = client_app.send_task("examples.record", args=[token], queue="low")
    assert result.get(timeout=30) == token
    assert records(state, f"ran:{token}") == ["low low-tls@test"]
    consumers = [
        name.decode() for name in state.zrange(ReliableChannel.inflight_registry_key, 0, -1)
    ]
    assert consumers, "no consumer registered its heartbeat"
    assert all(name.startswith(ReliableChannel.inflight_registry_key) for name in consumers)


def test_a_worker_killed_mid_task_over_tls_gets_its_message_back(
    start_pool_worker: StartWorker, client_app: Any, state: Any
) -> None:
    """SIGKILL of a worker's process group while its task runs: the task runs again on another
    worker within the grace period (consumer heartbeats over TLS), not after the hour-long
    visibility timeout, and is not lost."""
    worker = start_pool_worker("default", "--concurrency", "1", node="default-killed@test")
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.sleepy", args=[token, 8], queue="default")
    wait_until(lambda: records(state, f"started:{token}"), timeout=30, what="the task running")
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    killed = time.monotonic()
    start_pool_worker("default", "--concurrency", "1", node="default-after@test")
    wait_until(lambda: len(records(state, f"started:{token}")) == 2, timeout=GRACE + 30,
               interval=0.2, what="the task again")  # fmt: skip
    assert time.monotonic() - killed <= GRACE + 15
    wait_until(lambda: records(state, f"finished:{token}"), timeout=30, what="the task finishing")


def test_the_dlq_cli_works_over_tls(
    start_pool_worker: StartWorker, client_app: Any, worker_env: dict[str, str]
) -> None:
    """A task that fails for good is dead-lettered over TLS and ``worker-app dlq list`` and
    ``stats`` read it over TLS."""
    start_pool_worker("high", "--concurrency", "1", node="high-tls@test")
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.always_fails", args=[token], queue="high")

    def listed() -> list[dict[str, Any]]:
        result = cli(worker_env, "dlq", "list", "--json")
        assert result.returncode == 0, result.stderr
        return [e for e in json.loads(result.stdout) if token in json.dumps(e["args"])]

    entries = wait_until(listed, timeout=60, interval=0.5, what="the dead letter")
    assert entries[0]["task_name"] == "examples.always_fails"
    stats = cli(worker_env, "dlq", "stats", "--json")
    assert stats.returncode == 0, stats.stderr


def test_a_server_certificate_from_another_ca_is_refused_in_one_line(
    worker_env: dict[str, str], redis_server: RedisServer, other_ca: CertificateAuthority
) -> None:
    """Trusting another CA: ``dlq list`` and ``worker`` start-up end with one line naming the
    host, the CA file and the cause."""
    env = {**worker_env, "WORKER_APP_REDIS_TLS_CA_FILE": str(other_ca.cert_file)}
    where = f"TLS to Redis at 127.0.0.1:{redis_server.tls_port} refused"
    expected = (where, "not signed by a CA in the CA file", str(other_ca.cert_file))
    one_line_refusal(cli(env, "dlq", "list"), *expected)
    one_line_refusal(cli(env, "worker", "--pool", "low", "--metrics-port", "0"), *expected)


def test_without_a_ca_file_the_system_store_is_used_and_refuses_a_private_ca(
    worker_env: dict[str, str], redis_server: RedisServer
) -> None:
    """No CA file: the server is verified against the system's CA store (never unverified),
    which does not hold the test CA."""
    env = {k: v for k, v in worker_env.items() if k != "WORKER_APP_REDIS_TLS_CA_FILE"}
    one_line_refusal(
        cli(env, "dlq", "list"),
        f"127.0.0.1:{redis_server.tls_port}",
        "the system CA store (no WORKER_APP_REDIS_TLS_CA_FILE is set)",
    )


def test_a_certificate_for_another_host_is_refused_in_one_line(
    ca: CertificateAuthority, tls_env: dict[str, str], tmp_path: Path
) -> None:
    """A server whose certificate (signed by the trusted CA) names another host."""
    tls = ServerTLS(ca, ca.issue("elsewhere", hosts=("redis.elsewhere.test",)))
    server = start_redis(tmp_path / "redis", tls=tls)
    try:
        env = {**tls_env, "CELERY_BROKER_URL": server.url(0)}
        one_line_refusal(
            cli(env, "dlq", "list"),
            f"TLS to Redis at 127.0.0.1:{server.tls_port} refused",
            "does not name the host '127.0.0.1'",
        )
        # Checking the name is a setting (e.g. Redis reached by an address the certificate
        # does not carry); the CA is still verified.
        env["WORKER_APP_REDIS_TLS_CHECK_HOSTNAME"] = "no"
        assert cli(env, "dlq", "list").returncode == 0
    finally:
        server.stop()


def test_a_server_requiring_client_certificates_refuses_a_client_without_one(
    worker_env: dict[str, str], redis_server: RedisServer, other_ca: CertificateAuthority
) -> None:
    """``tls-auth-clients yes``: the module's workers present their certificate; a client
    without one is refused with a line saying which settings to set, and one whose certificate
    another CA signed with a line naming that certificate."""
    env = {
        k: v
        for k, v in worker_env.items()
        if k not in ("WORKER_APP_REDIS_TLS_CERT_FILE", "WORKER_APP_REDIS_TLS_KEY_FILE")
    }
    one_line_refusal(
        cli(env, "dlq", "list"),
        f"127.0.0.1:{redis_server.tls_port}",
        "requires a client certificate",
        "WORKER_APP_REDIS_TLS_CERT_FILE",
    )
    stranger = other_ca.issue("stranger", client=True)
    env = {
        **worker_env,
        "WORKER_APP_REDIS_TLS_CERT_FILE": str(stranger.cert_file),
        "WORKER_APP_REDIS_TLS_KEY_FILE": str(stranger.key_file),
    }
    one_line_refusal(
        cli(env, "dlq", "list"),
        f"127.0.0.1:{redis_server.tls_port}",
        f"client certificate {stranger.cert_file}",
    )


def test_plain_tcp_is_refused_and_tls_to_a_plain_port_says_so(
    worker_env: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    """``--port 0``: nothing answers plain TCP; a ``rediss://`` URL to a plain Redis (which
    waits for a command line, so the handshake times out) fails with one line that says so."""
    plain_url = f"redis://127.0.0.1:{redis_server.port}/0"
    refused = cli({**worker_env, "CELERY_BROKER_URL": plain_url, "WORKER_APP_REDIS_URL": ""},
                  "dlq", "list")  # fmt: skip
    assert refused.returncode == 2 and "cannot reach Redis" in refused.stderr, refused.stderr
    plain = start_redis(tmp_path / "plain")
    try:
        env = {**worker_env, "CELERY_BROKER_URL": f"rediss://127.0.0.1:{plain.port}/0"}
        one_line_refusal(
            cli(env, "dlq", "list"),
            f"cannot reach Redis at rediss://127.0.0.1:{plain.port}/0",
            "a rediss:// URL to a port without TLS times out like this",
        )
    finally:
        plain.stop()


def test_redbeat_holds_its_lock_and_schedule_over_tls(
    worker_env: dict[str, str], state: Any, tmp_path: Path
) -> None:
    """Beat with RedBeat on the bundled app: ``redbeat_redis_use_ssl`` from the same settings
    (the server requires the client certificate): it takes its lock and writes its schedule."""
    args = [
        "celery", "-A", "worker_app.app", "beat", "-S", "redbeat.RedBeatScheduler",
        "--loglevel", "INFO", "--pidfile=", "--schedule", str(tmp_path / "beat.db"),
    ]  # fmt: skip
    beat = start_worker(args, {**worker_env, "WORKER_APP_LOG_FORMAT": "text"},
                        tmp_path / "beat.log", ready_text="beat: Starting")  # fmt: skip
    try:
        beat.wait_for_log("beat: Acquired lock", timeout=30)
        assert state.exists("worker_app:redbeat::lock")
        assert state.zcard("worker_app:redbeat::schedule") >= 1
    finally:
        os.killpg(beat.process.pid, signal.SIGKILL)
        beat.process.wait()


def test_the_exporter_reads_queues_and_the_dlq_over_tls(
    worker_env: dict[str, str],
    client_app: Any,
    tmp_path: Path,
    redis_server: RedisServer,
    other_ca: CertificateAuthority,
) -> None:
    """``worker-app exporter`` over ``rediss://`` (with the client certificate): the length of a
    queue nobody consumes here equals what was published to it; it reports the server
    certificate's expiry from a verified handshake (the alert rules' input), and a handshake
    that does not verify as 0."""
    port = free_port()
    args = ["worker_app.cli", "exporter", "--port", str(port), "--tls-probe-interval", "1"]
    exporter = start_worker(
        args, worker_env, tmp_path / "exp.log", ready_text="exporter on http://"
    )
    try:
        for _ in range(3):
            client_app.send_task("examples.record", args=["x"], queue="critical")
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: total(scrape(url), "celery_queue_length", queue_name="critical") == 3,
                   timeout=30, what="the exporter's queue length")  # fmt: skip
        assert "worker_app_dlq" in scrape(url)
        assert redis_server.tls is not None
        endpoint = {"endpoint": f"127.0.0.1:{redis_server.tls_port}", "role": "redis"}
        page = scrape(url)
        assert total(page, "worker_app_tls_handshake_ok", **endpoint) == 1
        cert = x509.load_pem_x509_certificate(redis_server.tls.server.cert_file.read_bytes())
        expiry = total(page, "worker_app_tls_certificate_expiry_timestamp_seconds", **endpoint)
        assert expiry == cert.not_valid_after_utc.timestamp()
    finally:
        exporter.stop()
    at = Endpoint("redis", "127.0.0.1", redis_server.tls_port)
    wrong = TLSConfig(ca_file=str(other_ca.cert_file))
    found = probe(at, context_for(wrong))
    assert (found.ok, found.not_after) == (False, None)
    # The right CA but no client certificate: the server (tls-auth-clients yes) ends the session.
    assert not probe(at, context_for(TLSConfig(ca_file=str(redis_server.tls.ca.cert_file)))).ok


def test_a_task_running_through_a_quick_redis_restart_over_tls_runs_again_and_finishes(
    start_pool_worker: StartWorker, client_app: Any, state: Any, redis_server: RedisServer
) -> None:
    """A graceful Redis restart while a task runs, over TLS (what the redis role's handler does
    when certificates are rotated): the task runs again to the end, never dropped."""
    worker = start_pool_worker("high", "--concurrency", "1", node="high-restart-tls@test")
    token = uuid.uuid4().hex[:8]
    client_app.send_task("examples.sleepy", args=[token, 4], queue="high")
    wait_until(lambda: records(state, f"started:{token}"), timeout=30, what="the task running")
    state.save()  # this module's Redis has no persistence: what the restart must keep
    redis_server.stop()
    redis_server.start_again()
    wait_until(
        lambda: records(state, f"finished:{token}") or worker.process.poll(),
        timeout=GRACE + 30, interval=0.2, what="the task finished after the restart",
    )  # fmt: skip
    assert worker.process.poll() is None, worker.log()[-3000:]
    assert len(records(state, f"finished:{token}")) == 1
