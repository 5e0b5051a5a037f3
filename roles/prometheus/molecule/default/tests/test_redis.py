"""Verifiers for the redis role: auth, least privilege, persistence, binding."""

import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

CELERY = "--user celery --pass molecule-celery-secret-0001 --no-auth-warning"
EXPORTER = "--user exporter --pass molecule-exporter-secret-0001 --no-auth-warning"


def cli(host, auth, command):
    return host.run(f"redis-cli -h 127.0.0.1 -p 6379 {auth} {command}")


def test_anonymous_ping_is_refused(host):
    out = host.run("redis-cli -h 127.0.0.1 -p 6379 ping")
    assert "NOAUTH" in out.stdout + out.stderr


def test_celery_user_can_push_and_pop(host):
    assert cli(host, CELERY, "lpush molecule:q hello").stdout.strip() == "1"
    out = cli(host, CELERY, "brpop molecule:q 2").stdout.split()
    assert out == ["molecule:q", "hello"]


def test_celery_user_cannot_administer(host):
    for command in ("flushall", "config set maxmemory-policy allkeys-lru", "shutdown"):
        out = cli(host, CELERY, command)
        assert "NOPERM" in out.stdout + out.stderr, command


def test_exporter_user_cannot_write(host):
    out = cli(host, EXPORTER, "set molecule:x 1")
    assert "NOPERM" in out.stdout + out.stderr
    assert cli(host, EXPORTER, "ping").stdout.strip() == "PONG"


def test_exporter_user_sees_server_metadata_only(host):
    cli(host, CELERY, "set molecule:private payload")
    for command in ("get molecule:private", "scan 0", "client kill id 1", "client pause 0"):
        out = cli(host, EXPORTER, command)
        assert "NOPERM" in out.stdout + out.stderr, command
    assert "redis_version" in cli(host, EXPORTER, "info server").stdout
    assert cli(host, EXPORTER, "slowlog len").rc == 0


def test_persistence_and_eviction_policy(host):
    assert cli(host, EXPORTER, "config get appendonly").stdout.split() == ["appendonly", "yes"]
    assert cli(host, EXPORTER, "config get appendfsync").stdout.split() == [
        "appendfsync",
        "everysec",
    ]
    assert cli(host, EXPORTER, "config get maxmemory-policy").stdout.split() == [
        "maxmemory-policy",
        "noeviction",
    ]


def test_a_key_survives_a_restart(host):
    """A plain write, a MULTI/EXEC and a script's writes are all in Redis after a restart (with
    the default user off and no permissions, Redis's AOF replay dropped the last two)."""
    cli(host, CELERY, "set molecule:durable kept")
    multi = "MULTI\\nSET molecule:in-multi kept\\nLPUSH molecule:q m1\\nEXEC\\n"
    host.run_expect([0], f"printf '{multi}' | redis-cli -h 127.0.0.1 -p 6379 {CELERY}")
    script = "redis.call('set', KEYS[1], 'kept') redis.call('lpush', KEYS[2], 'm2')"
    cli(host, CELERY, f'eval "{script}" 2 molecule:in-script molecule:q')
    time.sleep(1.5)  # appendfsync everysec
    before = host.check_output("supervisorctl pid redis")
    host.run_expect([0], "supervisorctl restart redis")
    for _ in range(30):
        if cli(host, EXPORTER, "ping").stdout.strip() == "PONG":
            break
        time.sleep(0.5)
    assert host.check_output("supervisorctl pid redis") != before
    assert cli(host, CELERY, "get molecule:durable").stdout.strip() == "kept"
    assert cli(host, CELERY, "get molecule:in-multi").stdout.strip() == "kept"
    assert cli(host, CELERY, "get molecule:in-script").stdout.strip() == "kept"
    assert cli(host, CELERY, "lrange molecule:q 0 -1").stdout.split() == ["m2", "m1"]
    assert "AOF-loading-client" not in host.check_output("cat /var/log/redis/redis-server.log")


def test_listens_only_on_the_configured_address(host):
    listening = host.check_output("ss -Htlnp | awk '{print $4}'").split()
    redis_sockets = [addr for addr in listening if addr.endswith(":6379")]
    assert redis_sockets == ["127.0.0.1:6379"]


def test_runs_as_redis_with_safe_files(host):
    procs = host.process.filter(comm="redis-server")
    assert len(procs) == 1
    assert procs[0].user == "redis"
    data = host.file("/var/lib/redis")
    assert (data.user, data.mode) == ("redis", 0o750)
    acl = host.file("/etc/redis/users.acl")
    assert (acl.user, acl.group, acl.mode) == ("root", "redis", 0o640)
    assert "molecule-celery-secret" not in acl.content_string
    assert "user default off" in acl.content_string
