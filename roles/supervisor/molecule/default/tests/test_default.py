"""Verifiers for the supervisor role: the daemon, its include dir and its programs."""

import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

CONF = "/etc/supervisor/supervisord.conf"
INCLUDE_DIR = "/etc/supervisor/programs.d"


def status(host):
    """Map process name -> (state, pid or None) from `supervisorctl status`."""
    out = host.run(f"supervisorctl -c {CONF} status").stdout
    result = {}
    for line in out.splitlines():
        fields = line.split()
        pid = fields[3].rstrip(",") if len(fields) > 3 and fields[2] == "pid" else None
        result[fields[0]] = (fields[1], pid)
    return result


def test_supervisord_runs_as_root(host):
    procs = host.process.filter(comm="supervisord")
    assert len(procs) == 1
    assert procs[0].user == "root"
    pid = host.check_output(f"supervisorctl -c {CONF} pid")
    assert pid.isdigit()
    assert int(pid) == procs[0].pid


def test_include_directory_is_used(host):
    conf = host.file(CONF)
    assert conf.contains(f"^files = {INCLUDE_DIR}/\\*.conf$")
    assert host.file(f"{INCLUDE_DIR}/probe-a.conf").is_file
    # supervisord knows exactly the programs whose files are in the directory.
    avail = host.check_output(f"supervisorctl -c {CONF} avail")
    assert "probe-a" in avail
    assert "probe-custom" in avail
    assert "probe-gone" not in avail
    assert not host.file("/etc/supervisor/conf.d/probe-a.conf").exists


def test_programs_running(host):
    st = status(host)
    for name in ("probe-a", "probe-b:probe-b_0", "probe-b:probe-b_1", "probe-custom"):
        assert st[name][0] == "RUNNING", (name, st)
    assert host.process.get(pid=int(st["probe-b:probe-b_0"][1])).user == "nobody"


def test_environment_is_escaped(host):
    pid = status(host)["probe-a"][1]
    environ = host.file(f"/proc/{pid}/environ").content_string.split("\x00")
    assert 'PROBE_TEXT=a "quoted" 50% value' in environ
    assert "PROBE_VERSION=2" in environ


def test_control_socket_is_private(host):
    sock = host.file("/run/supervisor.sock")
    assert sock.is_socket
    assert sock.user == "root"
    assert sock.mode & 0o077 == 0


def test_changing_one_program_restarts_only_it(host):
    before = dict(
        line.split() for line in host.file("/root/pids-before").content_string.splitlines()
    )
    after = {name: pid for name, (_state, pid) in status(host).items()}
    assert before["probe-a"] != after["probe-a"], "probe-a's definition changed: it must restart"
    for name in ("probe-b:probe-b_0", "probe-b:probe-b_1", "probe-custom"):
        assert before[name] == after[name], f"{name} restarted although unchanged"
    assert "probe-gone" in before
    assert "probe-gone" not in after
    assert not host.file(f"{INCLUDE_DIR}/probe-gone.conf").exists
