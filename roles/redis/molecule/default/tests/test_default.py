"""Verifiers for the redis role with replication and Sentinel: two groups of three nodes
(Debian 12 and 13), each a primary, two replicas and three Sentinels.

The tests run in file order: the converged groups first (replication, Sentinels, ACL users),
then a primary is killed (SIGKILL, its supervisord paused so it stays down) and the failover is
timed, then the converge playbook runs again and must keep the new primary primary. Every node
and Sentinel serves TLS only: the helpers connect with the node's own CA file and certificate
(Debian 12's group requires client certificates).
"""

import functools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
SCENARIO = Path(__file__).resolve().parents[1]
GROUPS = {group: RUNNER.get_hosts(group) for group in ("redis_bookworm", "redis_trixie")}
FAILOVER_BOUND = 30  # seconds; down-after-milliseconds is 1000 in this scenario

EXPORTER = ("exporter", "molecule-exporter-secret-0001")
CELERY = ("celery", "molecule-celery-secret-0001")
REPLICA = ("replica", "molecule-replica-secret-0001")
SENTINEL = ("sentinel", "molecule-sentinel-secret-0001")
CLIENT = ("sentinel-client", "molecule-discovery-secret-0001")
SENTINEL_EXPORTER = ("sentinel-exporter", "molecule-sentinel-exporter-0001")

STATE = {}  # what the failover test leaves to the ones after it

TLS_DIR = "/etc/redis-stack/tls"
TLS = f"--tls --cacert {TLS_DIR}/ca.crt --cert {TLS_DIR}/redis.crt --key {TLS_DIR}/redis.key"
REQUIRES_CLIENT_CERTS = {"redis_bookworm": True, "redis_trixie": False}


@functools.cache
def node(name):
    # The containers directly (docker exec): much faster than through Ansible per command.
    return testinfra.get_host(f"docker://{name}")


def cli(name, port, user, command, tls=TLS):
    auth = f"--user {user[0]} --pass {user[1]} --no-auth-warning" if user else ""
    out = node(name).run(f"redis-cli -h 127.0.0.1 -p {port} {tls} {auth} {command}")
    return (out.stdout + out.stderr).strip()


def info(name, section="replication"):
    lines = cli(name, 6379, EXPORTER, f"info {section}").splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


@functools.cache
def address(name):
    return cli(name, 6379, EXPORTER, "config get bind").split()[-1]


def primary_of(group):
    primaries = [name for name in GROUPS[group] if info(name).get("role") == "master"]
    assert len(primaries) == 1, primaries
    return primaries[0]


def sentinel_answer(name):
    return cli(name, 26379, CLIENT, "SENTINEL GET-MASTER-ADDR-BY-NAME celery").splitlines()


def wait_for(check, seconds):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.mark.parametrize("group", GROUPS)
def test_one_primary_two_replicas_linked(group):
    primary = primary_of(group)
    assert info(primary)["connected_slaves"] == "2"
    for name in GROUPS[group]:
        if name != primary:
            replica = info(name)
            assert replica["role"] == "slave"
            assert replica["master_host"] == address(primary)
            assert replica["master_link_status"] == "up"
    # A write on the primary reaches the replicas.
    assert cli(primary, 6379, CELERY, "set molecule:replicated yes") == "OK"
    for name in GROUPS[group]:
        assert wait_for(
            lambda n=name: cli(n, 6379, CELERY, "get molecule:replicated") == "yes", 10
        ), name


@pytest.mark.parametrize("group", GROUPS)
def test_the_sentinels_agree_and_see_the_group(group):
    primary = primary_of(group)
    for name in GROUPS[group]:
        assert sentinel_answer(name) == [address(primary), "6379"], name
        # With the discovery user, as a Celery client asks: two replicas, two other Sentinels.
        replicas = cli(name, 26379, CLIENT, "SENTINEL REPLICAS celery").splitlines()
        assert replicas.count("name") == 2, replicas
        sentinels = cli(name, 26379, CLIENT, "SENTINEL SENTINELS celery").splitlines()
        assert sentinels.count("name") == 2, sentinels
        master = cli(name, 26379, CLIENT, "SENTINEL MASTER celery").splitlines()
        fields = dict(zip(master[0::2], master[1::2], strict=True))
        assert fields["num-slaves"] == "2" and fields["num-other-sentinels"] == "2"
        assert fields["quorum"] == "2" and fields["down-after-milliseconds"] == "1000"


@pytest.mark.parametrize("group", GROUPS)
def test_the_discovery_user_can_only_discover(group):
    name = GROUPS[group][1]
    assert cli(name, 26379, CLIENT, "PING") == "PONG"
    assert cli(name, 26379, CLIENT, "CLIENT SETNAME molecule-probe") == "OK"
    assert "redis_mode:sentinel" in cli(name, 26379, CLIENT, "INFO server")
    assert "celery" in cli(name, 26379, CLIENT, "SENTINEL MASTERS")
    for command in (
        "SENTINEL FAILOVER celery",
        "SENTINEL SET celery quorum 1",
        "SENTINEL RESET celery",
        "SENTINEL REMOVE celery",
        "SENTINEL CONFIG GET *",
        "ACL LIST",
        "SHUTDOWN NOSAVE",
        "SENTINEL MONITOR other 10.0.0.1 6379 2",
    ):
        assert "NOPERM" in cli(name, 26379, CLIENT, command), command
    # CONFIG is no Sentinel command at all.
    assert "unknown command" in cli(name, 26379, CLIENT, "CONFIG GET *")
    # The exporter's Sentinel user reads, no more.
    assert "celery" in cli(name, 26379, SENTINEL_EXPORTER, "SENTINEL MASTERS")
    assert "NOPERM" in cli(name, 26379, SENTINEL_EXPORTER, "SENTINEL FAILOVER celery")


@pytest.mark.parametrize("group", GROUPS)
def test_anonymous_access_is_refused(group):
    for name in GROUPS[group]:
        assert "NOAUTH" in cli(name, 6379, None, "PING")
        assert "NOAUTH" in cli(name, 26379, None, "PING")
        assert "NOAUTH" in cli(name, 26379, None, "SENTINEL MASTERS")


@pytest.mark.parametrize("group", GROUPS)
def test_tls_only_plain_tcp_and_unknown_cas_are_refused(group):
    for name in GROUPS[group]:
        for port, user in ((6379, EXPORTER), (26379, CLIENT)):
            assert cli(name, port, user, "PING", tls="") != "PONG", (name, port)
            # The server's certificate is not in the system's store: refused by the client.
            no_ca = cli(name, port, user, "PING", tls="--tls")
            assert "certificate verify failed" in no_ca, (name, port, no_ca)
            # A client without a certificate of its own: refused where they are required.
            no_cert = cli(name, port, user, "PING", tls=f"--tls --cacert {TLS_DIR}/ca.crt")
            if REQUIRES_CLIENT_CERTS[group]:
                assert no_cert != "PONG", (name, port)
            else:
                assert no_cert == "PONG", (name, port, no_cert)
        listening = node(name).check_output("ss -Htln | awk '{print $4}'").split()
        assert sorted(a for a in listening if a.endswith((":6379", ":26379"))) == sorted(
            f"{ip}:{port}" for ip in ("127.0.0.1", address(name)) for port in (6379, 26379)
        )
        assert cli(name, 6379, EXPORTER, "config get tls-replication").split()[-1] == "yes"
        assert cli(name, 6379, EXPORTER, "config get port").split()[-1] == "0"


@pytest.mark.parametrize("group", GROUPS)
def test_tls_files_keys_private_certificates_valid(group):
    for name in GROUPS[group]:
        host = node(name)
        tls_dir = host.file(TLS_DIR)
        assert (tls_dir.user, tls_dir.group, tls_dir.mode) == ("root", "redis", 0o750)
        key = host.file(f"{TLS_DIR}/redis.key")
        assert (key.user, key.group, key.mode) == ("root", "redis", 0o640)
        # No other user reads it (only the redis group: Redis itself).
        read_as = "setpriv --reuid={0} --regid={1} {2} cat " + TLS_DIR + "/redis.key"
        assert host.run(read_as.format("nobody", "nogroup", "--clear-groups")).rc != 0
        assert host.run(read_as.format("redis", "redis", "--init-groups")).rc == 0
        # Valid for more than 30 days, and the Sentinel (asked by its CLI over TLS) runs with it.
        host.run_expect([0], f"openssl x509 -checkend {30 * 86400} -noout -in {TLS_DIR}/redis.crt")
        host.run_expect([0], f"openssl verify -CAfile {TLS_DIR}/ca.crt {TLS_DIR}/redis.crt")


@pytest.mark.parametrize("group", GROUPS)
def test_the_replication_and_sentinel_users_on_the_data_nodes(group):
    name = GROUPS[group][0]
    for user in (REPLICA, SENTINEL):
        assert cli(name, 6379, user, "PING") == "PONG"
        assert "NOPERM" in cli(name, 6379, user, "GET molecule:replicated"), user
        assert "NOPERM" in cli(name, 6379, user, "FLUSHALL"), user
    assert "NOPERM" in cli(name, 6379, REPLICA, "REPLICAOF NO ONE")
    assert "NOPERM" in cli(name, 6379, CELERY, "REPLICAOF NO ONE")


@pytest.mark.parametrize("group", GROUPS)
def test_every_node_persists_and_listens_privately(group):
    for name in GROUPS[group]:
        host = node(name)
        assert cli(name, 6379, EXPORTER, "config get appendonly").split() == ["appendonly", "yes"]
        assert sorted(cli(name, 6379, EXPORTER, "config get bind").split()[1:]) == sorted(
            ["127.0.0.1", address(name)]
        )
        listening = host.check_output("ss -Htln | awk '{print $4}'").split()
        assert "0.0.0.0:26379" not in listening and "*:26379" not in listening
        assert f"{address(name)}:26379" in listening
        status = host.check_output("supervisorctl status")
        assert "redis " in status and "redis-sentinel " in status
        assert all(line.split()[1] == "RUNNING" for line in status.splitlines()), status
        # The role's files are out of Redis's reach; Sentinel's own file is not world-readable.
        conf = host.file("/etc/redis-stack/redis.conf")
        assert (conf.user, conf.group, conf.mode) == ("root", "redis", 0o640)
        assert host.file("/etc/redis-stack").user == "root"
        sentinel_conf = host.file("/etc/redis/sentinel-stack.conf")
        assert sentinel_conf.user == "redis" and sentinel_conf.mode & 0o007 == 0


def test_a_killed_primary_is_replaced_by_a_replica():
    # supervisord is paused so that it does not restart the killed server at once (as a host
    # that went down would stay down); both groups fail over at the same time.
    old = {group: primary_of(group) for group in GROUPS}
    old_addresses = {group: address(name) for group, name in old.items()}
    for name in old.values():
        host = node(name)
        pid = host.check_output("supervisorctl pid redis")
        host.run_expect([0], "kill -STOP $(pgrep -o -x supervisord) && kill -KILL %s", pid)
    killed = time.monotonic()
    elapsed = {}
    try:

        def promoted():
            for group, names in GROUPS.items():
                if group in elapsed:
                    continue
                answers = {tuple(sentinel_answer(n)) for n in names if n != old[group]}
                if len(answers) == 1 and next(iter(answers))[0] not in ("", old_addresses[group]):
                    elapsed[group] = round(time.monotonic() - killed, 1)
            return len(elapsed) == len(GROUPS)

        assert wait_for(promoted, FAILOVER_BOUND), (
            f"no failover within {FAILOVER_BOUND}s: {elapsed}"
        )
    finally:
        for name in old.values():
            node(name).run("kill -CONT $(pgrep -o -x supervisord)")
    print(f"failover (kill -9 of the primary -> the other Sentinels name a new one): {elapsed} s")
    results = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp")) / "failover.json"
    results.write_text(json.dumps(elapsed))
    for group, names in GROUPS.items():
        survivors = [n for n in names if n != old[group]]
        # Settled: the Sentinels name one primary, it is a master, and the other replica follows
        # it. With this scenario's 1 s detection a second election can briefly promote the other
        # replica too; the Sentinels then turn it back into a replica of the one they name.
        new = wait_for(lambda s=survivors: settled_primary(s), 30)
        assert new, (group, {n: info(n).get("role") for n in survivors})
        STATE[group] = {"old": old[group], "new": new}
        # The old primary, restarted by supervisor, is turned into a replica by the Sentinels.
        assert wait_for(lambda o=old[group], p=new: info(o).get("master_host") == address(p), 30)


def settled_primary(survivors):
    """The primary the Sentinels on ``survivors`` name once it is a master and the other
    survivor replicates from it; None before."""
    answers = {tuple(sentinel_answer(n)) for n in survivors}
    if len(answers) != 1:
        return None
    named = next(iter(answers))[0]
    new = next((n for n in survivors if address(n) == named), None)
    if new is None or info(new).get("role") != "master":
        return None
    other = info(next(n for n in survivors if n != new))
    if other.get("master_host") != named or other.get("master_link_status") != "up":
        return None
    return new


def test_a_converge_after_the_failover_keeps_the_new_primary():
    assert STATE, "runs after the failover test"
    pids = {g: node(s["new"]).check_output("supervisorctl pid redis") for g, s in STATE.items()}
    started = time.monotonic()
    play = subprocess.run(
        ["ansible-playbook", "-i", str(Path(INVENTORY).parent), str(SCENARIO / "converge.yml"),
         "-e", "molecule_reconverge=true"],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(SCENARIO.parents[2])},
    )  # fmt: skip
    print(f"converge after the failover: {time.monotonic() - started:.0f} s")
    assert play.returncode == 0, play.stdout + play.stderr
    for group, state in STATE.items():
        new, old = state["new"], state["old"]
        assert info(new)["role"] == "master", group
        # Not restarted: following the failover needs no restart of the new primary.
        assert node(new).check_output("supervisorctl pid redis") == pids[group]
        assert node(new).file("/etc/redis-stack/replication.conf").contains("^#")
        assert not node(new).file("/etc/redis-stack/replication.conf").contains("^replicaof")
        assert (
            node(old)
            .file("/etc/redis-stack/replication.conf")
            .contains(f"^replicaof {address(new)} 6379$")
        )
        old_info = info(old)
        assert old_info["role"] == "slave" and old_info["master_host"] == address(new)
        assert wait_for(lambda o=old: info(o).get("master_link_status") == "up", 20)
        for name in GROUPS[group]:
            assert sentinel_answer(name) == [address(new), "6379"], name
        # The Sentinels' CONFIG REWRITE could not replace the role's file (out of Redis's reach).
        for name in (new, old):
            conf = node(name).file("/etc/redis-stack/redis.conf")
            assert conf.user == "root" and not conf.contains("CONFIG REWRITE"), name
        # The data written before the failover is on the new primary.
        assert cli(new, 6379, CELERY, "get molecule:replicated") == "yes"
