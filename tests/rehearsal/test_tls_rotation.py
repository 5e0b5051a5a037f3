"""A rotation of every host's TLS certificate under continuous load loses nothing.

Runs after the rolling deploy (it restarts Redis, its Sentinels and the workers). New
certificates for every host, signed by the environment's CA (what ``tools/secrets.sh --tls``
writes into the vault; here given to the playbook as extra variables, so the repository's vault
stays as it is), are converged with ``ansible/site.yml`` while a producer on the controller
publishes to every queue. The redis role restarts Redis and then its Sentinel one node at a time,
each waiting until it answers over TLS; the workers restart with their new client files.
Nothing may be lost: every published task must finish, or be in the dead-letter queue (a task
whose own Redis calls hit the restart fails there, replayable); and every Redis must serve its new
certificate afterwards. Tasks running when Redis restarts are cancelled by Celery and run again
(at least once: their count is reported, not refused).
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.rehearsal.conftest import ROOT, Rehearsal
from tests.rehearsal.test_rolling_deploy import _dlq_list
from tests.support.tls import tls_ca_tool
from tests.support.waiting import wait_until

DURATIONS = (0.05, 0.2, 1.0)


def served_serial(address: str, port: int, ca_file: str) -> int:
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=address) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    return int(x509.load_der_x509_certificate(der).serial_number)


@pytest.mark.timeout(1800)
def test_certificate_rotation_under_load_loses_nothing(
    rehearsal: Rehearsal, client_app: Any
) -> None:
    if "WORKER_APP_REDIS_TLS_CA_FILE" not in rehearsal.tls_env:
        pytest.skip("this inventory does not turn TLS on (stack_redis_tls)")
    tool = tls_ca_tool()
    first = rehearsal.group("redis")[0]
    ca_cert, ca_key = (rehearsal.secret(f"vault_tls_ca_{kind}") for kind in ("cert", "key"))
    old = rehearsal.hostvars(first)["vault_tls_certs"]
    certs = {}
    for host in sorted(old):
        variables = rehearsal.hostvars(host)
        names = [host, variables.get("private_address", ""), variables.get("ansible_host", "")]
        cert, key = tool.issue(ca_cert, ca_key, host, [*names, "127.0.0.1", "localhost"])
        certs[host] = {"cert": cert, "key": key}
    extra = Path(tempfile.mkdtemp(prefix="rotation-")) / "certs.json"
    extra.write_text(json.dumps({"vault_tls_certs": certs}))
    extra.chmod(0o600)

    run = uuid.uuid4().hex[:6]
    queues = [queue for pool in rehearsal.pools for queue in pool["queues"]]
    published: list[str] = []
    publish_errors: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            token = f"rotate-{run}-{n}"
            seconds, queue = DURATIONS[(n // len(queues)) % len(DURATIONS)], queues[n % len(queues)]
            try:
                client_app.send_task("examples.sleepy", args=[token, seconds], queue=queue)
            except Exception as error:  # Redis restarting: the producer tries again
                publish_errors.append(type(error).__name__)
                time.sleep(0.5)
                continue
            published.append(token)
            time.sleep(0.1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    time.sleep(5)
    started = time.monotonic()
    rc, output = rehearsal.playbook("site.yml", "-e", f"@{extra}")
    rotate_seconds = time.monotonic() - started
    time.sleep(5)
    stop.set()
    producer.join(timeout=30)
    assert rc == 0, output[-6000:]

    client = rehearsal.redis()

    def count(kind: str, token: str) -> int:
        return int(client.llen(f"worker_app:examples:{kind}:{token}"))

    def unfinished() -> list[str]:
        with client.pipeline(transaction=False) as pipe:
            for token in published:
                pipe.llen(f"worker_app:examples:finished:{token}")
            return [t for t, n in zip(published, pipe.execute(), strict=True) if not n]

    def dead_letters() -> set[str]:
        entries = json.loads(_dlq_list(rehearsal))
        return {str(e["args"][0]) for e in entries if str(e["args"][0]).startswith(f"rotate-{run}")}

    # Every task finishes, or (its own Redis calls hit the restart) is in the dead-letter queue,
    # whence it can be replayed: nothing is lost.
    wait_until(lambda: not (set(unfinished()) - dead_letters()), timeout=300, interval=2,
               what="every published task to finish or be dead-lettered")  # fmt: skip
    dead = dead_letters()
    lost = sorted(set(unfinished()) - dead)
    finished_twice = [t for t in published if count("finished", t) > 1]
    started_twice = [t for t in published if count("started", t) > 1]
    ca_file = rehearsal.tls_env["WORKER_APP_REDIS_TLS_CA_FILE"]
    port = int(rehearsal.hostvars(first).get("stack_redis_port", 6379))
    serving_old = [
        host
        for host in rehearsal.group("redis")
        if served_serial(rehearsal.address(host), port, ca_file)
        != x509.load_pem_x509_certificate(certs[host]["cert"].encode()).serial_number
    ]
    figures = {
        "published": len(published),
        "publish_errors_retried": len(publish_errors),
        "lost": len(lost),
        "finished_more_than_once": len(finished_twice),
        "started_more_than_once": len(started_twice),
        "dead_lettered": len(dead),
        "rotate_seconds": round(rotate_seconds, 1),
        "redis_hosts": len(rehearsal.group("redis")),
    }
    out = ROOT / ".rehearsal" / rehearsal.env_name / "tls-rotation.json"
    Path(out).write_text(json.dumps(figures, indent=2))
    print(f"\nTLS rotation figures: {json.dumps(figures)}")
    assert published, "the producer published nothing"
    assert serving_old == [], f"still serving the old certificate: {serving_old}"
    assert lost == [], f"lost: {lost[:10]}"
