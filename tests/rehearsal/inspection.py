"""What the rehearsal hosts are configured to run, and what they actually run.

Configured: which roles ``ansible/site.yml`` applies to each host (its plays' host patterns and
``when`` conditions), and every role variable as Ansible resolves it for that host (inventory,
vault, ``ansible/group_vars`` wiring), falling back to the role's defaults. A play that applies a
role a second time with its own ``vars`` (the Sentinel's redis_exporter) is one more instance of
that role on the host, with those variables on top.
Actual: listening sockets and processes read from ``/proc`` inside each container (the minimal
host images may lack ``ss``/``ps``), and supervisor's programs.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import testinfra
import yaml

from tests.rehearsal.conftest import BIN, ROOT, Rehearsal

UNDEFINED = "\x00undefined"
EXTRA_NAMES = ("group_names", "inventory_hostname", "private_address", "stack_exporter_host",
               "stack_required_secrets",
               # The console's Prometheus user: its hash is in the console's users file, its
               # password in Prometheus' password_file (tests/rehearsal/test_hardening.py).
               "stack_console_prometheus_user", "vault_console_prometheus_password",
               "vault_console_prometheus_password_hash")  # fmt: skip


def role_defaults() -> dict[str, dict[str, Any]]:
    """Every role's ``defaults/main.yml``, by role name."""
    return {
        path.parents[1].name: dict(yaml.safe_load(path.read_text()) or {})
        for path in sorted(ROOT.glob("roles/*/defaults/main.yml"))
    }


def playbook_roles() -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(host pattern, role, when, vars) for every role a play of ``ansible/site.yml`` applies."""
    found = []
    site = yaml.safe_load((ROOT / "ansible" / "site.yml").read_text())
    for entry in site:
        for play in yaml.safe_load(
            (ROOT / "ansible" / entry["ansible.builtin.import_playbook"]).read_text()
        ):
            for role in play.get("roles", []):
                spec = {"role": role} if isinstance(role, str) else role
                when = spec.get("when")
                if isinstance(when, list):
                    when = " and ".join(f"({w})" for w in when)
                found.append((str(play["hosts"]), str(spec.get("role") or spec["name"]), when,
                              dict(spec.get("vars") or {})))  # fmt: skip
    return found


def hosts_of(pattern: str, rehearsal: Rehearsal) -> set[str]:
    """Hosts of a play pattern made of group/host names joined by ':' or ','."""
    if re.search(r"[!&*~\[]", pattern):
        raise ValueError(f"unsupported host pattern {pattern!r}: extend hosts_of()")
    every = set(rehearsal.data["_meta"]["hostvars"])
    hosts: set[str] = set()
    for name in re.split(r"[:,]", pattern):
        hosts |= every if name == "all" else (set(rehearsal.group(name)) or {name} & every)
    return hosts


def render(template: str, variables: dict[str, Any]) -> str:
    """A role default's Jinja template, rendered with ``variables`` and Ansible's ``bool``
    filter (what the role defaults use); an unknown variable or filter is an error."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    env.filters["bool"] = lambda v: str(v).strip().lower() in ("true", "yes", "1", "on")
    return env.from_string(template).render(variables)


@dataclass
class HostConfig:
    """One host as configured: its roles and its variables.

    ``vars`` holds what the inventory and the wiring set; a name they leave unset takes its
    role's default, and a name two roles define differently must be asked for with ``of``.
    ``instances`` lists each application of a role (role, the play's own variables for it).
    """

    name: str
    roles: set[str]
    vars: dict[str, Any]
    defaults: dict[str, dict[str, Any]]
    instances: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def views(self) -> Iterator[tuple[str, HostConfig]]:
        """(role, the host as that application of the role sees it) for each role instance."""
        for role, own in self.instances:
            yield role, HostConfig(self.name, self.roles, {**self.vars, **own}, self.defaults)

    def enabled(self, role: str, name: str) -> bool:
        """A boolean variable (Ansible's templated strings included) as the role reads it."""
        return str(self.of(role, name)).strip().lower() in ("true", "yes", "1", "on")

    def of(self, role: str, name: str) -> Any:
        """``name`` as the tasks of ``role`` see it (their own default first; a default that is
        a template is rendered with the host's variables over the role's defaults)."""
        if name in self.vars or name not in self.defaults.get(role, {}):
            return self[name]
        value = self.defaults[role][name]
        if isinstance(value, str) and "{{" in value:
            return render(value, {**self.defaults[role], **self.vars}).strip()
        return value

    def __getitem__(self, name: str) -> Any:
        if name in self.vars:
            return self.vars[name]
        values = {repr(d[name]): d[name] for d in self.defaults.values() if name in d}
        if len(values) != 1:
            raise KeyError(f"{name}: {'roles disagree' if values else 'undefined'}, use of()")
        return next(iter(values.values()))

    @property
    def address(self) -> str:
        return str(self.vars["private_address"])


_CONFIGURED: dict[tuple[str, str], dict[str, HostConfig]] = {}


def configured_hosts(rehearsal: Rehearsal) -> dict[str, HostConfig]:
    """Every inventory host: the roles site.yml gives it and its resolved variables (resolved
    once per inventory and session: one `ansible` run over every host takes ~10 s)."""
    key = (str(rehearsal.inventory), str(rehearsal.connection))
    if key not in _CONFIGURED:
        _CONFIGURED[key] = _resolve_hosts(rehearsal)
    return _CONFIGURED[key]


def _resolve_hosts(rehearsal: Rehearsal) -> dict[str, HostConfig]:
    defaults = role_defaults()
    names = sorted({n for values in defaults.values() for n in values} | set(EXTRA_NAMES))
    plays = playbook_roles()
    whens = [when or "true" for _, _, when, _ in plays]
    template = (
        "{{ {'vars': query('ansible.builtin.vars', *_names, default=_undefined), "
        "'instances': _instances, 'whens': ["
        + ", ".join(f"(({w}) | bool)" for w in whens)
        + "]} }}"
    )
    proc = subprocess.run(
        [str(BIN / "ansible"), "-i", rehearsal.inventory, "-i", rehearsal.connection,
         *rehearsal.vault_args, "--playbook-dir", str(ROOT / "ansible"),
         "-e", json.dumps({"_names": names, "_undefined": UNDEFINED,
                           "_instances": [own for *_, own in plays]}),
         "-m", "ansible.builtin.debug", "-a", json.dumps({"msg": template}), "all"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**rehearsal.ansible_env, "ANSIBLE_STDOUT_CALLBACK": "json",
             "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
    configured = {}
    for host, result in results.items():
        values, conditions = result["msg"]["vars"], result["msg"]["whens"]
        defined = {
            name: value for name, value in zip(names, values, strict=True) if value != UNDEFINED
        }
        instances = [
            (role, dict(own))
            for (pattern, role, _, _), ok, own in zip(
                plays, conditions, result["msg"]["instances"], strict=True
            )
            if ok and host in hosts_of(pattern, rehearsal)
        ]
        roles = {role for role, _ in instances}
        configured[host] = HostConfig(host, roles, defined, defaults, instances)
    return configured


# --- what runs -------------------------------------------------------------------------

# Runs inside a container as root: listening sockets (with their owner uid), every process.
SNAPSHOT = r"""
import json, os, socket
def addr(text, v6):
    raw = bytes.fromhex(text)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
listeners = []
for name, proto, state in (("tcp", "tcp", "0A"), ("tcp6", "tcp", "0A"),
                           ("udp", "udp", "07"), ("udp6", "udp", "07")):
    try:
        lines = open("/proc/net/" + name).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[3] == state:
            ip, port = f[1].split(":")
            listeners.append({"proto": proto, "address": addr(ip, name.endswith("6")),
                              "port": int(port, 16), "uid": int(f[7]), "inode": f[9]})
procs = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
    except (OSError, ValueError):
        continue  # exited meanwhile
    procs[pid] = {"ppid": int(status["PPid"]), "name": status["Name"].strip(),
                  "uids": [int(x) for x in status["Uid"].split()],
                  "gids": [int(x) for x in status["Gid"].split()],
                  "cmdline": cmdline.decode("utf-8", "replace").strip()}
print(json.dumps({"self": os.getpid(), "listeners": listeners, "procs": procs}))
"""

# Runs as one uid:gid: the socket inodes of the processes it may inspect. Root in a container
# lacks CAP_SYS_PTRACE, so only a process's own uid and gid can read its /proc/<pid>/fd links.
SOCKETS = r"""
import json, os
found = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            found.setdefault(link[8:-1], []).append(int(pid))
print(json.dumps(found))
"""


@dataclass
class Listener:
    proto: str
    address: str
    port: int
    uid: int
    pids: list[int]


@dataclass
class Process:
    pid: int
    ppid: int
    name: str
    uids: list[int]
    gids: list[int]
    cmdline: str


@dataclass
class Program:
    """A supervisor program (a numprocs group counts as one) and its processes' main pids."""

    name: str
    states: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


class Host:
    """A rehearsal container, inspected through testinfra's docker backend."""

    def __init__(self, name: str, container: str) -> None:
        self.name = name
        self.container = container
        self.testinfra = testinfra.get_host(f"docker://{container}")

    def run(self, command: str) -> Any:
        return self.testinfra.run(command)

    def read(self, path: str) -> str:
        return str(self.testinfra.file(path).content_string)

    @cached_property
    def snapshot(self) -> dict[str, Any]:
        return dict(json.loads(self.testinfra.check_output(f"python3 -c {shlex.quote(SNAPSHOT)}")))

    @cached_property
    def listeners(self) -> list[Listener]:
        """Listening TCP and bound UDP sockets, each with the pids that hold it."""
        holders: dict[str, set[int]] = {}
        credentials = {(p["uids"][0], p["gids"][0]) for p in self.snapshot["procs"].values()}
        for uid, gid in sorted(credentials):
            command = (f"setpriv --reuid={uid} --regid={gid} --clear-groups "
                       f"python3 -c {shlex.quote(SOCKETS)}")  # fmt: skip
            for inode, pids in json.loads(self.testinfra.check_output(command)).items():
                holders.setdefault(inode, set()).update(pids)
        return [
            Listener(s["proto"], s["address"], s["port"], s["uid"],
                     sorted(holders.get(s["inode"], set()) & set(self.processes)))
            for s in self.snapshot["listeners"]
        ]  # fmt: skip

    @property
    def processes(self) -> dict[int, Process]:
        own = self.snapshot["self"]
        return {
            int(pid): Process(int(pid), p["ppid"], p["name"], p["uids"], p["gids"], p["cmdline"])
            for pid, p in self.snapshot["procs"].items()
            if int(pid) != own
        }

    def descendants(self, pid: int) -> list[int]:
        """``pid`` and every process below it."""
        children: dict[int, list[int]] = {}
        for proc in self.processes.values():
            children.setdefault(proc.ppid, []).append(proc.pid)
        found, todo = [], [pid]
        while todo:
            current = todo.pop()
            found.append(current)
            todo.extend(children.get(current, []))
        return found

    @cached_property
    def programs(self) -> dict[str, Program]:
        """supervisorctl status, by program (group) name."""
        out = self.run("supervisorctl status")
        assert out.rc in (0, 3), out.stdout + out.stderr  # 3: some program is not running
        programs: dict[str, Program] = {}
        for line in out.stdout.splitlines():
            name, state, *rest = line.split(None, 2)
            program = programs.setdefault(name.split(":", 1)[0], Program(name.split(":", 1)[0]))
            program.states.append(state)
            match = re.match(r"pid (\d+),", rest[0] if rest else "")
            if match:
                program.pids.append(int(match.group(1)))
        return programs

    def program_of(self, pid: int) -> str | None:
        """The supervisor program whose process tree holds ``pid``."""
        owners = {p: program.name for program in self.programs.values() for p in program.pids}
        procs = self.processes
        while pid in procs:
            if pid in owners:
                return owners[pid]
            pid = procs[pid].ppid
        return None

    def program_config(self, program: str, include_dir: str) -> dict[str, str] | None:
        """The ``[program:NAME]`` section supervisor reads for ``program`` (None: no file)."""
        f = self.testinfra.file(f"{include_dir}/{program}.conf")
        if not f.exists:
            return None
        parser = configparser.RawConfigParser()
        parser.read_string(str(f.content_string))
        return dict(parser[f"program:{program}"])

    def uid_of(self, user: str) -> int:
        return int(self.testinfra.user(user).uid)

    def grep_files(self, patterns: list[str], roots: list[str]) -> dict[str, set[str]]:
        """Files under ``roots`` (binary ones too) holding any of ``patterns``: file -> patterns.

        The patterns go to grep through stdin, never on a command line.
        """
        proc = subprocess.run(
            ["docker", "exec", "-i", self.container,
             "grep", "-raoHFZ", "-D", "skip", "-f", "-", *roots],
            input="\n".join(patterns) + "\n", capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip
        assert proc.returncode in (0, 1), proc.stderr  # 1: no match
        found: dict[str, set[str]] = {}
        for line in proc.stdout.splitlines():
            path, _, match = line.partition("\0")
            found.setdefault(path, set()).add(match)
        return found


def rehearsal_hosts(rehearsal: Rehearsal) -> dict[str, Host]:
    """The containers of the rehearsal, from the generated connection inventory."""
    connection = yaml.safe_load(Path(rehearsal.connection).read_text())
    return {
        name: Host(name, str(values["ansible_host"]))
        for name, values in sorted(connection["all"]["hosts"].items())
    }
