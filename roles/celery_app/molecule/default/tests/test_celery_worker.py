"""Verifiers for the celery_worker role: real workers of the host's app (the bundled one, or
the Django project's) consuming their own queues."""

import json
import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

VENV = "/opt/worker-app/venv"
WITH_ENV = "set -a && . /etc/worker-app/worker.env && set +a && "
# The side effect took `reports` off the hosts (its catalogue entry stays).
NODES = ("critical-0", "high-0", "default-0", "default-1", "low-0")
QUEUES = ("critical", "high", "default", "low")
# The bundled app's host: a task of worker_app.examples on each queue records its node.
PROBE = r"""
import json, sys, time, uuid
import redis
from worker_app import app
client = redis.Redis.from_url(app.conf.broker_url)
tokens = {q: uuid.uuid4().hex[:8] for q in sys.argv[1].split(",")}
for queue, token in tokens.items():
    app.send_task("examples.record", args=[token], queue=queue)
ran = {}
deadline = time.time() + 60
while len(ran) < len(tokens) and time.time() < deadline:
    for queue, token in tokens.items():
        values = client.lrange(f"worker_app:examples:ran:{token}", 0, -1)
        if values:
            ran[queue] = values[0].decode().split(" ", 1)[1]
    time.sleep(0.2)
print(json.dumps(ran))
"""
# The Django project's host: the project's own task (orders.fulfil_order) on each queue, for an
# order of its own; the order records the node that fulfilled it in the project's database.
PROBE_DJANGO = r"""
import json, sys, time, uuid
import django
django.setup()
from orders.models import Order
from proj.celery import app
orders = {
    q: Order.objects.create(customer="molecule", sku=f"probe-{uuid.uuid4().hex[:8]}",
                            shipping_address="1 Probe Street")
    for q in sys.argv[1].split(",")
}
for queue, order in orders.items():
    app.send_task("orders.fulfil_order", args=[order.pk], queue=queue)
ran = {}
deadline = time.time() + 60
while len(ran) < len(orders) and time.time() < deadline:
    for queue, order in orders.items():
        order.refresh_from_db()
        if order.fulfilled_by:
            node = order.fulfilled_by
            ran[queue] = f"{node.split('@')[0].rsplit('-', 1)[0]} {node}"
    time.sleep(0.2)
print(json.dumps(ran))
"""


def in_env(host, command):
    return host.run(f"sh -c '{WITH_ENV}{command}'")


def wait_for_nodes(host):
    # The host's app (WORKER_APP_CELERY_APP from the environment file).
    ping = f'{VENV}/bin/celery -A "$WORKER_APP_CELERY_APP" inspect ping -t 5'
    out = ""
    for _ in range(30):
        out = in_env(host, ping).stdout
        if all(f"{node}@" in out for node in NODES):
            return out
        time.sleep(2)
    raise AssertionError(f"not every node answered: {out}")


def test_every_node_answers_inspect_ping(host):
    out = wait_for_nodes(host)
    assert out.count("pong") == len(NODES)


def test_workers_run_as_the_service_user(host):
    lines = host.check_output("ps -eo user:20,args | grep '[w]orker-app worker'").splitlines()
    assert lines
    assert {line.split()[0] for line in lines} == {"celery"}
    user = host.user("celery")
    assert user.shell == "/usr/sbin/nologin"


def test_each_pool_consumes_only_its_own_queue(host, app_module, as_service_user):
    wait_for_nodes(host)
    probe = PROBE_DJANGO if app_module == "proj" else PROBE
    host.run_expect([0], f"cat > /tmp/probe.py <<'PY'\n{probe}\nPY")
    out = as_service_user(f"{VENV}/bin/python /tmp/probe.py {','.join(QUEUES)}")
    assert out.rc == 0, out.stderr
    ran = json.loads(out.stdout)
    assert set(ran) == set(QUEUES)
    for queue, value in ran.items():
        pool, node = value.split()
        assert pool == queue
        assert node.startswith(f"{queue}-")


def test_metrics_endpoints_answer(host):
    wait_for_nodes(host)
    for port in (9811, 9812, 9813, 9814, 9815):
        body = host.check_output(f"curl -fsS http://127.0.0.1:{port}/metrics")
        assert "celery_worker_tasks_active" in body, port


def test_supervisor_waits_longer_than_the_time_limit(host):
    conf = host.file("/etc/supervisor/conf.d/celery-low.conf").content_string
    assert "stopwaitsecs=1890" in conf
    assert "killasgroup=true" in conf
    assert "--hostname low-%(process_num)d@%%h" in conf


def program_pids(status):
    """{program: main pids} from supervisorctl status output."""
    pids = {}
    for line in status.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "RUNNING":
            pids.setdefault(fields[0].split(":")[0], []).append(fields[3].rstrip(","))
    return pids


def test_a_pool_the_host_no_longer_runs_is_stopped_and_removed(host):
    # side_effect.yml recorded supervisor's status with `reports` running, then applied the
    # roles without it.
    before = program_pids(host.file("/tmp/molecule-status-before").content_string)
    assert "celery-reports" in before
    after = program_pids(host.run("supervisorctl status").stdout)
    assert "celery-reports" not in after
    assert not host.file("/etc/supervisor/conf.d/celery-reports.conf").exists
    assert not host.socket("tcp://127.0.0.1:9816").is_listening
    assert host.run("pgrep -f '[w]orker-app worker --pool reports'").rc == 1
    # The other pools' workers were left alone.
    assert {name: pids for name, pids in after.items() if name != "celery-reports"} == {
        name: pids for name, pids in before.items() if name != "celery-reports"
    }
