"""Hardening checks on the converged rehearsal hosts: one test per item of docs/hardening.md.

Expectations come from the configuration, never from what was deployed: which roles
``ansible/site.yml`` gives each host and every role variable as Ansible resolves it for that host
(tests/rehearsal/inspection.py). Each test collects every violation on every host and fails with
the whole list; each also counts what it checked, so that it cannot pass on an empty rehearsal.
"""

from __future__ import annotations

import configparser
import functools
import hashlib
import ipaddress
import pickle
import re
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from kombu import Producer

from tests.rehearsal.conftest import Rehearsal
from tests.rehearsal.inspection import (
    Host,
    HostConfig,
    configured_hosts,
    rehearsal_hosts,
    role_defaults,
)
from tests.support.waiting import wait_until
from worker_app.dlq.store import UnknownEntryError
from worker_app.dlq.writer import store_for
from worker_app.settings import Settings

Spec = str | Callable[[HostConfig], Any]


def fixed(value: Any) -> Callable[[HostConfig], Any]:
    """A value the role hard-codes (no variable)."""
    return lambda _host: value


@dataclass(frozen=True)
class Service:
    """A process a role runs under supervisor, described by the role's variables.

    By convention a role names them ``<role>_program_name``, ``<role>_user``,
    ``<role>_address`` and ``<role>_port``; an entry names only what differs. Where a role runs
    is read from the playbooks, so an entry for a role no play applies is inert.
    """

    role: str
    program: Spec = ""
    user: Spec = ""
    addresses: Spec = ""
    ports: Spec = ""
    listens: bool = True
    runs: bool = True  # False: configured, but not started in the rehearsal
    pools: bool = False  # one program per entry of celery_worker_pools
    when: Callable[[HostConfig], bool] | None = None  # the role runs it only when this holds

    def value(self, host: HostConfig, spec: Spec, suffix: str) -> Any:
        return spec(host) if callable(spec) else host.of(self.role, spec or f"{self.role}_{suffix}")


# Every service the stack runs. Adding one (e.g. a new exporter) is one line here.
SERVICES = (
    Service("redis", user=fixed("redis"), addresses="redis_bind_addresses"),
    # With replication, a Sentinel beside each Redis (same addresses, its own port).
    Service(
        "redis",
        program="redis_sentinel_program_name",
        user=fixed("redis"),
        addresses="redis_bind_addresses",
        ports="redis_sentinel_port",
        when=lambda host: host.enabled("redis", "redis_replication_enabled"),
    ),
    Service("redis_exporter"),
    Service("node_exporter"),
    # The Celery roles run as celery_app's user: their one install contract.
    Service(
        "celery_worker",
        user="celery_app_user",
        addresses="celery_worker_metrics_address",
        pools=True,
    ),
    Service("celery_beat", user="celery_app_user", listens=False),
    Service("flower", user="celery_app_user"),
    Service("console", user="celery_app_user"),
    Service("broker_exporter", user="celery_app_user"),
    Service("prometheus"),
    Service("alertmanager"),  # issue 10: inert until a play applies the role
    # No Grafana package source is reachable here (roles/grafana README): its configuration is
    # checked, the program stays stopped.
    Service("grafana", runs=False),
)
ROLES_WITHOUT_A_SERVICE = {"supervisor", "celery_app", "monitoring_export"}

# The rehearsal containers' only foreign socket: Docker's embedded DNS resolver, which Docker
# opens in the container's network namespace (no process of the host holds it).
DOCKER_DNS = "127.0.0.11"
WILDCARDS = {"0.0.0.0", "::"}  # noqa: S104 - what no socket may use


@dataclass(frozen=True)
class Expected:
    """A supervisor program a host must run, as configured."""

    name: str
    role: str
    user: str
    sockets: frozenset[tuple[str, int]]
    runs: bool


def expected_programs(host: HostConfig) -> dict[str, Expected]:
    """The supervisor programs of ``host``, from its roles and variables."""
    unknown = host.roles - {s.role for s in SERVICES} - ROLES_WITHOUT_A_SERVICE
    assert not unknown, f"{host.name}: roles {unknown} run something: add them to SERVICES"
    programs = {}
    for role, view in host.views():
        for service in SERVICES:
            if service.role == role and (service.when is None or service.when(view)):
                programs.update(service_programs(service, view))
    return programs


def service_programs(service: Service, host: HostConfig) -> dict[str, Expected]:
    """The supervisor programs ``service`` gives ``host`` (one, or one per pool)."""
    user = service.value(host, service.user, "user")
    addresses: list[str] = []
    if service.listens:
        value = service.value(host, service.addresses, "address")
        addresses = [value] if isinstance(value, str) else list(value)
    if not service.pools:
        name = service.value(host, service.program, "program_name")
        ports = [int(service.value(host, service.ports, "port"))] if service.listens else []
        sockets = frozenset((a, p) for a in addresses for p in ports)
        return {name: Expected(name, service.role, user, sockets, service.runs)}
    programs = {}
    for pool in host["celery_worker_pools"]:
        first = int(pool["metrics_port"])
        ports = range(first, first + int(pool.get("nodes", 1)))
        name = f"celery-{pool['name']}"  # roles/celery_worker: one program per pool
        sockets = frozenset((a, p) for a in addresses for p in ports)
        programs[name] = Expected(name, service.role, user, sockets, service.runs)
    return programs


@pytest.fixture(scope="module")
def configured(rehearsal: Rehearsal) -> dict[str, HostConfig]:
    return configured_hosts(rehearsal)


@pytest.fixture
def hosts(rehearsal: Rehearsal) -> dict[str, Host]:
    return rehearsal_hosts(rehearsal)


def with_role(configured: dict[str, HostConfig], role: str) -> list[HostConfig]:
    return [host for host in configured.values() if role in host.roles]


def grafana_ini(host: Host, config: HostConfig) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(host.read(f"{config['grafana_config_dir']}/grafana.ini"))
    return parser


def unquote_ini(value: str) -> str:
    return value[3:-3] if value.startswith('"""') and value.endswith('"""') else value


def is_private(address: str, config: HostConfig) -> bool:
    ip = ipaddress.ip_address(address)
    return address in (config.address, "127.0.0.1", "::1") and (ip.is_private or ip.is_loopback)


def report(problems: list[str]) -> str:
    return "\n".join(["", *problems])


# --- 1. Redis requires authentication; its ACL users are least-privilege ----------------

# Commands neither ACL user may run, each in a form that would do no harm if it did run:
# a refusal (NOPERM) proves the ACL; any other answer means the ACL let it through.
ADMIN_COMMANDS = (
    ("FLUSHALL", "NO-SUCH-FLAG"),
    ("FLUSHDB", "NO-SUCH-FLAG"),
    ("CONFIG", "SET", "no-such-parameter", "1"),
    ("ACL", "LIST"),
    ("ACL", "LOG"),
    ("ACL", "SETUSER", "hardening-probe", "no-such-rule"),
    ("SHUTDOWN", "NOSAVE", "SAVE"),
    ("DEBUG", "SLEEP", "0"),
    ("MONITOR",),
    ("KEYS", "hardening-no-such-key:*"),
    ("SAVE",),
    ("BGSAVE", "SCHEDULE"),
    ("BGREWRITEAOF",),
    ("LASTSAVE",),
    ("REPLICAOF", "NO", "ONE"),
    ("FAILOVER", "ABORT"),
    ("MODULE", "LIST"),
    ("CLIENT", "KILL", "ID", "0"),
    ("CLIENT", "PAUSE", "0"),
    ("SWAPDB", "14", "15"),
    ("SLOWLOG", "RESET"),
    ("LATENCY", "RESET"),
)
# Celery's user also has no business with the exporter's monitoring commands.
CELERY_DENIED = (
    *ADMIN_COMMANDS,
    ("CONFIG", "GET", "maxmemory"),
    ("CLIENT", "LIST"),
    ("SLOWLOG", "GET"),
)
# The exporter reads server metadata only: no key or channel, no write.
EXPORTER_DENIED_ON_KEY = (
    *[(command, "{key}") for command in ("GET", "STRLEN", "EXISTS", "TYPE", "DUMP", "HGETALL")],
    ("LRANGE", "{key}", "0", "-1"),
    ("SCAN", "0"),
    ("SET", "{key}", "changed"),
    ("APPEND", "{key}", "x"),
    ("DEL", "{key}"),
    ("EXPIRE", "{key}", "1"),
    ("LPUSH", "{key}-list", "x"),
    ("PUBLISH", "hardening-probe", "x"),
    ("MULTI",),
    ("EVAL", "return 1", "0"),
)
# What redis_exporter runs with its default flags (and health checks): allowed.
EXPORTER_NEEDS = (
    ("PING",),
    ("INFO", "server"),
    ("CONFIG", "GET", "maxmemory"),
    ("SLOWLOG", "LEN"),
    ("LATENCY", "LATEST"),
    ("LATENCY", "HISTOGRAM"),
    ("CLIENT", "SETNAME", "probe"),
)


def refused(connect: Callable[[], redis.Redis], command: tuple[str, ...]) -> bool:
    """Whether Redis refuses ``command`` to this user (NOPERM; for DEBUG also its server switch)."""
    client = connect()
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as error:
        # Redis 7 disables DEBUG for every user (enable-debug-command no) before the ACL check.
        return command[0] == "DEBUG" and "not allowed" in str(error)
    finally:
        client.close()
    return False


@functools.cache
def pem_file(text: str) -> str:
    """A PEM text of the configuration as a file on the controller (for the TLS clients)."""
    handle, path = tempfile.mkstemp(prefix="hardening-", suffix=".pem")
    with open(handle, "w") as out:
        out.write(text.strip() + "\n")
    return path


def tls_enabled(config: HostConfig) -> bool:
    return config.enabled("redis", "redis_tls_enabled")


def tls_kwargs(config: HostConfig) -> dict[str, Any]:
    """redis-py's TLS options for this Redis host, as a client on the controller: its CA and,
    as client certificate, the host's own (any certificate of the CA is accepted)."""
    if not tls_enabled(config):
        return {}
    return {
        "ssl": True,
        "ssl_ca_certs": pem_file(config.of("redis", "redis_tls_ca_cert")),
        "ssl_certfile": pem_file(config.of("redis", "redis_tls_cert")),
        "ssl_keyfile": pem_file(config.of("redis", "redis_tls_key")),
    }


def redis_cli_tls(config: HostConfig) -> str:
    """redis-cli's TLS options on the Redis host (the role's files)."""
    if not tls_enabled(config):
        return ""
    tls = config.of("redis", "redis_tls_dir")
    return f"--tls --cacert {tls}/ca.crt --cert {tls}/redis.crt --key {tls}/redis.key"


def anonymous_access(host: Host, config: HostConfig, address: str, port: int) -> bool:
    """Whether Redis at ``address`` answers a client that did not authenticate."""
    if ipaddress.ip_address(address).is_loopback:  # reachable from the host only
        out = host.run(f"redis-cli -h {address} -p {port} {redis_cli_tls(config)} ping")
        return "NOAUTH" not in out.stdout + out.stderr
    # from the controller
    client = redis.Redis(host=address, port=port, socket_timeout=10, **tls_kwargs(config))
    try:
        client.ping()
    except redis.AuthenticationError:
        return False
    finally:
        client.close()
    return True


def acl_user_problems(host: Host, config: HostConfig) -> Iterator[str]:
    """The ACL file defines exactly the configured users, and `default` is off."""
    users = {
        line.split()[1]: line.split()[2:]
        for line in host.read(config.of("redis", "redis_acl_path")).splitlines()
        if line.startswith("user ")
    }
    wanted = {
        "default",
        config.of("redis", "redis_celery_user"),
        config.of("redis", "redis_exporter_user"),
        *(user["name"] for user in config.of("redis", "redis_extra_users")),
    }
    if replicated(config):
        wanted |= {
            config.of("redis", "redis_replication_user"),
            config.of("redis", "redis_sentinel_user"),
        }
    if set(users) != wanted:
        yield f"{config.name}: ACL users {sorted(users)}, configured {sorted(wanted)}"
    if "off" not in users.get("default", []):
        yield f"{config.name}: the default user is not disabled"
    # Off, but with every permission: Redis replays the AOF as the default user and drops each
    # transaction it may not run (redis/redis#14541; docs/hardening.md).
    if not {"~*", "&*", "+@all"} <= set(users.get("default", [])):
        yield f"{config.name}: the default user lacks ~* &* +@all (AOF replay drops transactions)"


def connector(
    config: HostConfig, user: str, password: str, port: int | None = None
) -> Callable[[], redis.Redis]:
    address, port = config.address, port or int(config.of("redis", "redis_port"))
    return lambda: redis.Redis(
        host=address,
        port=port,
        username=user,
        password=password,
        socket_timeout=10,
        **tls_kwargs(config),
    )


def acl_user(config: HostConfig, which: str) -> Callable[[], redis.Redis]:
    """Clients of the redis role's `celery` or `exporter` ACL user."""
    user, password = (config.of("redis", f"redis_{which}_{v}") for v in ("user", "password"))
    return connector(config, user, password)


# What Sentinel's client user (discovery only) must never do.
SENTINEL_CLIENT_DENIED = (
    ("SENTINEL", "FAILOVER", "hardening-no-such-master"),
    ("SENTINEL", "SET", "hardening-no-such-master", "quorum", "1"),
    ("SENTINEL", "REMOVE", "hardening-no-such-master"),
    ("SENTINEL", "RESET", "hardening-no-such-master"),
    ("SENTINEL", "CONFIG", "GET", "*"),
    ("SENTINEL", "MONITOR", "hardening-probe", "127.0.0.1", "1", "2"),
    ("ACL", "LIST"),
    ("SHUTDOWN", "NOSAVE"),
)


def sentinel_problems(host: Host, config: HostConfig) -> Iterator[str]:
    """The host's Sentinel answers no anonymous client; its client user only discovers."""
    port = int(config.of("redis", "redis_sentinel_port"))
    for address in config.of("redis", "redis_bind_addresses"):
        if anonymous_access(host, config, address, port):
            yield f"{config.name}: Sentinel at {address}:{port} answers without AUTH"
    user, password = (
        config.of("redis", f"redis_sentinel_client_{v}") for v in ("user", "password")
    )
    client = connector(config, user, password, port)
    master = config.of("redis", "redis_sentinel_master_name")
    if client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master) is None:
        yield f"{config.name}: Sentinel's {user} cannot discover the primary of {master}"
    for command in SENTINEL_CLIENT_DENIED:
        if not refused(client, command):
            yield f"{config.name}: Sentinel's {user} may run {' '.join(command)}"


def acl_command_checks(config: HostConfig, problems: list[str]) -> tuple[int, bool]:
    """Each ACL user may run what it needs and nothing it must not: appends to ``problems``,
    returns how many commands were tried and whether this node is the primary."""
    checked = 0
    celery, exporter = acl_user(config, "celery"), acl_user(config, "exporter")
    key = f"hardening:probe:{uuid.uuid4().hex}"
    # A replica refuses every write (READONLY), after the ACL check: the write probe runs on the
    # primary, the refusals on every node.
    primary = exporter().info("replication")["role"] == "master"
    if primary:
        assert celery().set(key, "celery may write its keys")
    try:
        for command in EXPORTER_NEEDS:
            exporter().execute_command(*command)  # a refusal raises: the exporter needs it
        for command in CELERY_DENIED:
            checked += 1
            if not refused(celery, command):
                problems.append(f"{config.name}: the celery user may run {' '.join(command)}")
        for template in (*EXPORTER_DENIED_ON_KEY, *ADMIN_COMMANDS):
            command = tuple(part.format(key=key) for part in template)
            checked += 1
            if not refused(exporter, command):
                problems.append(f"{config.name}: the exporter may run {' '.join(command)}")
        if primary:
            assert celery().get(key) == b"celery may write its keys"
    finally:
        if primary:
            celery().delete(key, f"{key}-list")
    return checked, primary


def test_redis_requires_auth_and_acl_users_are_least_privilege(
    configured: dict[str, HostConfig], hosts: dict[str, Host]
) -> None:
    problems: list[str] = []
    checked, primaries = 0, []
    for config in with_role(configured, "redis"):
        host, port = hosts[config.name], int(config.of("redis", "redis_port"))
        for address in config.of("redis", "redis_bind_addresses"):
            checked += 1
            if anonymous_access(host, config, address, port):
                problems.append(f"{config.name}: Redis at {address}:{port} answers without AUTH")
        problems.extend(acl_user_problems(host, config))
        if replicated(config):
            problems.extend(sentinel_problems(host, config))
        tried, primary = acl_command_checks(config, problems)
        checked += tried
        primaries += [config.name] if primary else []
    assert checked > len(CELERY_DENIED), "no Redis host in the rehearsal"
    assert len(primaries) == 1, f"primaries: {primaries} (one, and the write probe ran on it)"
    assert not problems, report(problems)


# --- 1b. Redis serves TLS only, with certificates of the environment's CA ----------------

MIN_DAYS_LEFT = 30


def handshake(
    address: str, port: int, context: ssl.SSLContext, ping: bool = False
) -> dict[str, Any]:
    """A TLS handshake with ``address:port`` (and a PING: with TLS 1.3 a refused client
    certificate shows only afterwards); the verified peer certificate."""
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=address) as tls,
    ):
        if ping:
            tls.sendall(b"PING\r\n")
            if not tls.recv(64):
                raise ConnectionError("closed after the handshake")
        return dict(tls.getpeercert() or {})


def tls_problems(config: HostConfig) -> Iterator[str]:
    """From the controller, on each private address and port of the host's Redis (and
    Sentinel): plain TCP gets no answer, a client that trusts only the system's CAs refuses the
    certificate, the certificate verifies with the CA and lasts 30+ days, and where client
    certificates are required a client without one is refused."""
    ports = [int(config.of("redis", "redis_port"))]
    if replicated(config):
        ports.append(int(config.of("redis", "redis_sentinel_port")))
    tls = tls_kwargs(config)
    for address in config.of("redis", "redis_bind_addresses"):
        if ipaddress.ip_address(address).is_loopback:
            continue
        for port in ports:
            where = f"{config.name}: {address}:{port}"
            plain = redis.Redis(host=address, port=port, socket_timeout=5)
            try:
                plain.ping()
                yield f"{where} answers plain TCP"
            except redis.AuthenticationError:
                yield f"{where} answers plain TCP (asks for AUTH)"
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # no answer: TLS only
            finally:
                plain.close()
            try:
                handshake(address, port, ssl.create_default_context())
                yield f"{where}: a client without the environment's CA accepts its certificate"
            except ssl.SSLCertVerificationError:
                pass
            context = ssl.create_default_context(cafile=tls["ssl_ca_certs"])
            context.load_cert_chain(tls["ssl_certfile"], tls["ssl_keyfile"])
            served = handshake(address, port, context, ping=True)
            days_left = (ssl.cert_time_to_seconds(served["notAfter"]) - time.time()) / 86400
            if days_left < MIN_DAYS_LEFT:
                yield f"{where}: its certificate expires in {days_left:.0f} days"
            if config.of("redis", "redis_tls_auth_clients") == "yes":
                anonymous = ssl.create_default_context(cafile=tls["ssl_ca_certs"])
                try:
                    handshake(address, port, anonymous, ping=True)
                    yield f"{where} accepts a client without a certificate"
                except (ssl.SSLError, ConnectionError, OSError):
                    pass


def tls_monitoring_problems(rehearsal: Rehearsal, servers: list[HostConfig]) -> Iterator[str]:
    """Prometheus sees every Redis over TLS: redis_exporter's redis_up, and the broker
    exporter's verified handshake with the expiry of each endpoint's certificate (what the
    RedisTLSCertificateExpires* alerts read)."""
    endpoints = {f"{c.address}:{c.of('redis', 'redis_port')}" for c in servers}
    if any(replicated(c) for c in servers):
        endpoints |= {f"{c.address}:{c.of('redis', 'redis_sentinel_port')}" for c in servers}

    def seen() -> dict[str, float]:
        result = rehearsal.prometheus(
            "/api/v1/query?query=worker_app_tls_certificate_expiry_timestamp_seconds"
        )["result"]
        return {r["metric"]["endpoint"]: float(r["value"][1]) for r in result}

    expiries = wait_until(
        lambda: (found := seen()) and set(found) >= endpoints and found,
        timeout=120, interval=5, what="every TLS endpoint's expiry in Prometheus",
    )  # fmt: skip
    for endpoint, expiry in sorted(expiries.items()):
        if expiry < time.time() + MIN_DAYS_LEFT * 86400:
            yield f"Prometheus: {endpoint}'s certificate expires within {MIN_DAYS_LEFT} days"
    failing = rehearsal.prometheus("/api/v1/query?query=worker_app_tls_handshake_ok!=1")["result"]
    yield from (f"Prometheus: handshake failing with {r['metric']}" for r in failing)
    down = rehearsal.prometheus("/api/v1/query?query=redis_up!=1")["result"]
    yield from (f"Prometheus: redis_exporter cannot reach {r['metric']}" for r in down)


def test_redis_serves_tls_only_with_certificates_of_the_ca(
    rehearsal: Rehearsal, configured: dict[str, HostConfig]
) -> None:
    servers = list(with_role(configured, "redis"))
    if not any(tls_enabled(config) for config in servers):
        pytest.skip("this inventory does not turn TLS on (stack_redis_tls)")
    problems = [p for config in servers for p in tls_problems(config)]
    problems.extend(tls_monitoring_problems(rehearsal, servers))
    assert servers, "no Redis host in the rehearsal"
    assert not problems, report(problems)


# --- 2. Services bind only to configured private addresses ------------------------------


def listener_problems(host: Host, expected: dict[str, Expected]) -> Iterator[str]:
    """Every socket listening on the host is a configured socket of the program holding it."""
    for listener in host.listeners:
        where = f"{host.name}: {listener.proto} {listener.address}:{listener.port}"
        if listener.address in WILDCARDS:
            yield f"{where} listens on every interface"
        if not listener.pids:
            if listener.address != DOCKER_DNS:
                yield f"{where} is held by no process of the host"
            continue
        for owner in {host.program_of(pid) for pid in listener.pids}:
            if owner not in expected:
                yield f"{where} belongs to {owner or 'no supervisor program'}"
            elif (listener.address, listener.port) not in expected[owner].sockets:
                yield f"{where} ({owner}) is not configured: {sorted(expected[owner].sockets)}"


def held_by(host: Host, program: str, address: str, port: int) -> bool:
    return any(
        (listener.address, listener.port) == (address, port)
        and program in {host.program_of(pid) for pid in listener.pids}
        for listener in host.listeners
    )


def grafana_bind_problems(host: Host, config: HostConfig) -> Iterator[str]:
    """Grafana is not installed here: its grafana.ini must name the configured socket."""
    server = grafana_ini(host, config)["server"]
    wanted = (config["grafana_address"], str(config["grafana_port"]))
    if (server.get("http_addr"), server.get("http_port")) != wanted:
        yield f"{host.name}: grafana.ini [server] is {dict(server)}, configured {wanted}"


def test_services_bind_only_to_configured_private_addresses(
    configured: dict[str, HostConfig], hosts: dict[str, Host]
) -> None:
    problems: list[str] = []
    checked = 0
    for name, host in hosts.items():
        config = configured[name]
        expected = expected_programs(config)
        problems.extend(listener_problems(host, expected))
        for program in expected.values():
            for address, port in sorted(program.sockets):
                checked += 1
                if not is_private(address, config):
                    problems.append(
                        f"{name}: {program.name} is configured for {address}:{port}, "
                        "not the host's private address or loopback"
                    )
                if program.runs and not held_by(host, program.name, address, port):
                    problems.append(f"{name}: {program.name} does not listen on {address}:{port}")
        if "grafana" in config.roles:
            problems.extend(grafana_bind_problems(host, config))
    assert checked >= len(configured), "no service sockets checked"
    assert not problems, report(problems)


# --- 3. Services run as non-root users ---------------------------------------------------


def process_user_problems(host: Host, program: Expected) -> Iterator[str]:
    """The program runs, and each of its processes has only its user's uid, no root group."""
    running = host.programs.get(program.name)
    if running is None or set(running.states) != {"RUNNING"}:
        yield f"{host.name}: {program.name} is not running ({running})"
        return
    uid = host.uid_of(program.user)
    processes = host.processes
    for pid in running.pids:
        for child in host.descendants(pid):
            proc = processes[child]
            if uid == 0 or set(proc.uids) != {uid} or 0 in proc.gids:
                yield (
                    f"{host.name}: {program.name} process {child} ({proc.name}) runs as "
                    f"uids {proc.uids} gids {proc.gids}, expected {program.user}"
                )


def test_services_run_as_non_root_users(
    configured: dict[str, HostConfig], hosts: dict[str, Host]
) -> None:
    problems: list[str] = []
    checked = 0
    for name, host in hosts.items():
        config = configured[name]
        expected = expected_programs(config)
        for extra in sorted(set(host.programs) - set(expected)):
            problems.append(f"{name}: supervisor runs {extra}, which no role configures")
        for program in expected.values():
            checked += 1
            settings = host.program_config(program.name, config["supervisor_include_dir"])
            if settings is None:
                problems.append(f"{name}: {program.name} is not a supervisor program")
                continue
            user = settings.get("user", "root")
            if program.user == "root" or user != program.user:
                problems.append(f"{name}: {program.name} runs as {user}, configured {program.user}")
            if program.runs:
                problems.extend(process_user_problems(host, program))
    assert checked >= len(configured), "no service checked"
    assert not problems, report(problems)


# --- 4. Secret files are 0600/0640 with the right owners -----------------------------------


@dataclass(frozen=True)
class SecretFile:
    """A file a role writes secrets into: only its owner (root, unless the service rewrites the
    file itself) may change it, only its service read it."""

    role: str
    path: Spec
    group: Spec
    holds: tuple[str, ...]  # variables whose values it contains (an empty one: none)
    hashed: bool = False  # it holds their SHA-256 instead
    optional: bool = False  # written only while its secrets are set (removed otherwise)
    owner: Spec = ""  # "": root
    when: Callable[[HostConfig], bool] | None = None  # the role writes it only when this holds

    def wanted(self, host: HostConfig) -> bool:
        if self.when is not None and not self.when(host):
            return False
        return not self.optional or any(host.of(self.role, v) for v in self.holds)

    def value(self, host: HostConfig, spec: Spec) -> str:
        return str(spec(host) if callable(spec) else host.of(self.role, spec))


def replicated(host: HostConfig) -> bool:
    return host.enabled("redis", "redis_replication_enabled")


# Every file holding a secret. A role that writes one more is one more line here.
SECRET_FILES = (
    SecretFile(
        "redis",
        "redis_acl_path",
        fixed("redis"),
        (
            "redis_celery_password",
            "redis_exporter_password",
            "redis_replication_password",
            "redis_sentinel_password",
        ),  # the last two: replication
        hashed=True,
    ),
    # Replication: the replicas' password to their primary (masterauth).
    SecretFile(
        "redis", "redis_conf_path", fixed("redis"), ("redis_replication_password",), when=replicated
    ),
    # The Sentinel's file: its own users' hashes, its password to peers and data nodes. Sentinel
    # rewrites the file itself, so redis owns it.
    SecretFile(
        "redis",
        "redis_sentinel_conf_path",
        fixed("redis"),
        ("redis_sentinel_password",),
        owner=fixed("redis"),
        when=replicated,
    ),
    SecretFile(
        "redis",
        "redis_sentinel_conf_path",
        fixed("redis"),
        (
            "redis_sentinel_password",
            "redis_sentinel_client_password",
            "redis_sentinel_exporter_password",
        ),
        hashed=True,
        owner=fixed("redis"),
        when=replicated,
    ),
    SecretFile(
        "redis_exporter",
        "redis_exporter_env_file",
        "redis_exporter_user",
        ("redis_exporter_redis_password",),
    ),
    # TLS: each host's private key, beside the files of the roles that use it.
    SecretFile(
        "redis",
        lambda host: f"{host.of('redis', 'redis_tls_dir')}/redis.key",
        fixed("redis"),
        ("redis_tls_key",),
        when=tls_enabled,
    ),
    SecretFile(
        "redis_exporter",
        lambda host: re.sub(
            r"\.env$", ".key", host.of("redis_exporter", "redis_exporter_env_file")
        ),
        "redis_exporter_user",
        ("redis_exporter_tls_key",),
        optional=True,
    ),
    SecretFile(
        "celery_app",
        lambda host: str(
            Path(host.of("celery_app", "celery_app_env_file")).parent / "tls/client.key"
        ),
        "celery_app_group",
        ("celery_app_tls_key",),
        optional=True,
    ),
    # The broker's password; behind Sentinel also the Sentinels' client password.
    SecretFile(
        "celery_app",
        "celery_app_env_file",
        "celery_app_group",
        ("redis_celery_password", "redis_sentinel_client_password"),
    ),
    SecretFile(
        "flower", "flower_auth_env_file", "celery_app_group", ("flower_basic_auth_password",)
    ),
    # The console's users file (password hashes: the vault's own users', a list, and Prometheus'
    # user's, a string) and the key that signs its sessions.
    SecretFile(
        "console",
        "console_users_file",
        "celery_app_group",
        ("vault_console_prometheus_password_hash",),
    ),
    SecretFile("console", "console_key_file", "celery_app_group", ("console_secret_key",)),
    # Prometheus' password to the console's /metrics (its scrape job's basic_auth).
    SecretFile(
        "prometheus",
        lambda host: f"{host.of('prometheus', 'prometheus_config_dir')}/secrets/console.password",
        "prometheus_user",
        ("vault_console_prometheus_password",),
    ),
    SecretFile(
        "grafana",
        lambda host: f"{host['grafana_config_dir']}/grafana.ini",
        "grafana_user",
        ("grafana_admin_password", "grafana_secret_key"),
    ),
    SecretFile(
        "alertmanager",
        lambda host: f"{host['alertmanager_config_dir']}/alertmanager-smtp-password",
        "alertmanager_user",
        ("alertmanager_smtp_auth_password",),
        optional=True,
    ),
)
SEARCHED = ["/etc", "/opt", "/srv", "/home", "/root", "/usr/local", "/var", "/tmp", "/run"]


def secret_forms(value: str, hashed: bool) -> Iterator[str]:
    if "-----BEGIN" in value:  # a PEM key: its second line of base64 (key material only)
        yield value.strip().splitlines()[2]
        return
    if hashed:
        yield hashlib.sha256(value.encode()).hexdigest()
    else:
        yield value
        if quote(value, safe="") != value:
            yield quote(value, safe="")  # as it appears in a URL


def secret_file_problems(host: Host, config: HostConfig) -> Iterator[str]:
    """Each secret file of the host's roles: a regular file, 0640/0600, root:<its service>."""
    for spec, view in secret_files(config):
        path, group = spec.value(view, spec.path), spec.value(view, spec.group)
        owner = spec.value(view, spec.owner) if spec.owner else "root"
        f = host.testinfra.file(path)
        if not f.is_file or f.is_symlink:
            yield f"{host.name}: {path} is missing or not a regular file"
        elif (f.user, f.group) != (owner, group) or f.mode not in (0o600, 0o640):
            yield (
                f"{host.name}: {path} is {f.mode:04o} {f.user}:{f.group}, "
                f"expected 0640 (or 0600) {owner}:{group}"
            )


def secret_files(config: HostConfig) -> Iterator[tuple[SecretFile, HostConfig]]:
    """The secret files each role instance of the host writes, with the instance's view."""
    for role, view in config.views():
        for spec in SECRET_FILES:
            if spec.role == role and spec.wanted(view):
                yield spec, view


def secret_placement_problems(host: Host, config: HostConfig, secrets: list[str]) -> Iterator[str]:
    """Every secret (or hash of one) is in its files and nowhere else; never in a command line."""
    allowed: dict[str, set[str]] = {}  # secret form -> the files that may hold it
    held: set[tuple[str, tuple[str, ...]]] = set()  # (file, the forms of one of its secrets)
    for spec, view in secret_files(config):
        for variable in spec.holds:
            value = str(view.of(spec.role, variable) or "")
            secret = tuple(secret_forms(value, spec.hashed)) if value else ()
            for form in secret:
                allowed.setdefault(form, set()).add(spec.value(view, spec.path))
            if secret:
                held.add((spec.value(view, spec.path), secret))
    patterns = sorted({form for s in secrets for form in secret_forms(s, False)} | set(allowed))
    found = host.grep_files(patterns, SEARCHED)
    for path, forms in sorted(found.items()):
        for form in sorted(forms):
            if path not in allowed.get(form, set()):
                yield f"{host.name}: {path} holds a secret (...{form[-4:]})"
    # A secret is held in one of its forms (as it is, or URL-quoted where it has to be).
    for path, one_secret in sorted(held):
        if not set(one_secret) & found.get(path, set()):
            yield f"{host.name}: {path} does not hold its secret (...{one_secret[0][-4:]})"
    for proc in host.processes.values():
        if any(form in proc.cmdline for form in patterns):
            yield f"{host.name}: process {proc.pid} ({proc.name}) has a secret in its arguments"


def vault_secrets(rehearsal: Rehearsal) -> dict[str, str]:
    """Every secret of the inventory's vault (its vault_* strings that are set)."""
    any_host = next(iter(rehearsal.data["_meta"]["hostvars"]))
    variables = rehearsal.hostvars(any_host)
    # The hosts' TLS keys (the certificates, and the CA's, are public).
    keys = {
        f"vault_tls_certs[{host}].key": pair["key"]
        for host, pair in sorted(variables.get("vault_tls_certs", {}).items())
    }
    return {
        **{
            name: value
            for name, value in sorted(variables.items())
            if name.startswith("vault_")
            and isinstance(value, str)
            and value
            and name != "vault_tls_ca_cert"
        },
        **keys,
    }


def test_secret_files_are_private_with_the_right_owners(
    rehearsal: Rehearsal, configured: dict[str, HostConfig], hosts: dict[str, Host]
) -> None:
    secrets = list(vault_secrets(rehearsal).values())
    problems: list[str] = []
    files = 0
    for name, host in hosts.items():
        config = configured[name]
        files += sum(1 for _ in secret_files(config))
        problems.extend(secret_file_problems(host, config))
        problems.extend(secret_placement_problems(host, config, secrets))
    assert files >= len(configured), "no secret files checked"
    assert not problems, report(problems)


# --- 5. No default passwords anywhere --------------------------------------------------------

# Grafana's built-in [security] secret_key, published in its defaults.ini
GRAFANA_DEFAULT_SECRET_KEY = "SW2YcwTIb9zpOOhoPsMm"  # noqa: S105
WELL_KNOWN = ("", "admin", "password", "changeme", "secret", "flower", "redis", "grafana")


def role_default_problems() -> Iterator[str]:
    """The roles ship no credential: every password/secret/token variable defaults to empty."""
    for role, defaults in sorted(role_defaults().items()):
        for variable, value in sorted(defaults.items()):
            if re.search(r"password|secret|token", variable) and value not in ("", None):
                yield f"roles/{role}/defaults: {variable} has a default value"


def vault_tls_problems(rehearsal: Rehearsal, hostvars: dict[str, Any]) -> Iterator[str]:
    """The environment's CA, and a certificate and key for every host."""
    pairs = hostvars.get("vault_tls_certs") or {}
    if "BEGIN CERTIFICATE" not in str(hostvars.get("vault_tls_ca_cert", "")):
        yield "the vault has no vault_tls_ca_cert (the environment's CA)"
    for host in rehearsal.data["_meta"]["hostvars"]:
        if not {"cert", "key"} <= set(pairs.get(host) or {}):
            yield f"vault_tls_certs has no certificate and key for {host}"


def vault_problems(rehearsal: Rehearsal, required: list[str]) -> Iterator[str]:
    """Every secret the play requires is in the vault; each is long, not well known, unique."""
    secrets = vault_secrets(rehearsal)
    hostvars = rehearsal.hostvars(next(iter(rehearsal.data["_meta"]["hostvars"])))
    for name in required:
        # A list of users with password hashes; the CA's certificate (public) and every host's
        # certificate and key (a mapping), checked below.
        if name in ("vault_console_users", "vault_tls_ca_cert", "vault_tls_certs"):
            continue
        if name not in secrets:
            yield f"the vault has no {name}"
    if "vault_tls_certs" in required:
        yield from vault_tls_problems(rehearsal, hostvars)
    users = hostvars.get("vault_console_users")
    if not users or not isinstance(users, list):
        yield "the vault has no vault_console_users (the console's users)"
    else:
        for user in users:
            if set(user) != {"name", "password_hash", "role"} or not re.match(
                r"^(scrypt|pbkdf2):", str(user["password_hash"])
            ):
                yield f"vault_console_users: {user.get('name')!r} is not name/password_hash/role"
    for name, value in secrets.items():
        if len(value) < 16 or value.lower() in WELL_KNOWN:
            yield f"the vault's {name} is short or well known"
    if len(set(secrets.values())) != len(secrets):
        yield "two vault secrets are equal"


def redis_default_user_problems(rehearsal: Rehearsal, config: HostConfig) -> Iterator[str]:
    """The password-less `default` user is off; the ACL users log in with the vault's secrets."""
    for password in WELL_KNOWN:
        try:
            connector(config, "default", password)().ping()
            yield f"{config.name}: Redis accepts the default user with {password!r}"
        except redis.AuthenticationError:
            pass
    for user, secret in (
        (config.of("redis", "redis_celery_user"), "vault_redis_celery_password"),
        (config.of("redis", "redis_exporter_user"), "vault_redis_exporter_password"),
    ):
        if not connector(config, user, rehearsal.secret(secret))().ping():
            yield f"{config.name}: {user} does not log in with the vault's {secret}"


def flower_default_problems(rehearsal: Rehearsal, config: HostConfig) -> Iterator[str]:
    """Flower refuses well-known passwords and accepts the vault's."""
    url = f"http://{config['flower_address']}:{config['flower_port']}/"
    user = config["flower_basic_auth_user"]
    for password in WELL_KNOWN:
        if rehearsal.http(url, (user, password))[0] != 401:
            yield f"{config.name}: Flower accepts {user}:{password!r}"
    if rehearsal.http(url, (user, rehearsal.secret("vault_flower_password")))[0] != 200:
        yield f"{config.name}: Flower refuses the vault's password"


def console_default_problems(rehearsal: Rehearsal, config: HostConfig) -> Iterator[str]:
    """The console refuses well-known passwords; its admin and Prometheus' user log in with the
    vault's (Basic auth on /metrics, as Prometheus scrapes it)."""
    url = f"http://{config['console_address']}:{config['console_port']}/metrics"
    for password in WELL_KNOWN:
        status = rehearsal.http(url, ("admin", password))[0]
        if status != 401:
            yield f"{config.name}: the console answers {status} (not 401) to admin:{password!r}"
    status = rehearsal.http(url)[0]
    if status != 401:
        yield f"{config.name}: the console answers {status} (not 401) without credentials"
    for user, secret in (
        ("admin", "vault_console_admin_password"),
        (config["stack_console_prometheus_user"], "vault_console_prometheus_password"),
    ):
        status = rehearsal.http(url, (user, rehearsal.secret(secret)))[0]
        if status != 200:
            yield f"{config.name}: the console answers {status} to {user} with the vault's {secret}"


def grafana_default_problems(rehearsal: Rehearsal, host: Host, config: HostConfig) -> Iterator[str]:
    """grafana.ini sets the vault's admin password and secret key (configuration only)."""
    security = grafana_ini(host, config)["security"]
    password = unquote_ini(security.get("admin_password", ""))
    key = unquote_ini(security.get("secret_key", ""))
    if password != rehearsal.secret("vault_grafana_admin_password") or password in WELL_KNOWN:
        yield f"{config.name}: grafana.ini admin_password is not the vault's"
    if key != rehearsal.secret("vault_grafana_secret_key") or key == GRAFANA_DEFAULT_SECRET_KEY:
        yield f"{config.name}: grafana.ini secret_key is not the vault's"


def test_no_default_passwords_anywhere(
    rehearsal: Rehearsal, configured: dict[str, HostConfig], hosts: dict[str, Host]
) -> None:
    names = next(iter(configured.values()))["stack_required_secrets"]
    problems = [*role_default_problems(), *vault_problems(rehearsal, names)]
    for config in with_role(configured, "redis"):
        problems.extend(redis_default_user_problems(rehearsal, config))
    for config in with_role(configured, "flower"):
        problems.extend(flower_default_problems(rehearsal, config))
    for config in with_role(configured, "console"):
        problems.extend(console_default_problems(rehearsal, config))
    for config in with_role(configured, "grafana"):
        problems.extend(grafana_default_problems(rehearsal, hosts[config.name], config))
    assert all(with_role(configured, role) for role in ("redis", "flower", "console", "grafana"))
    assert not problems, report(problems)


# --- 6. Grafana anonymous access is off --------------------------------------------------------


def test_grafana_anonymous_access_is_off(
    configured: dict[str, HostConfig], hosts: dict[str, Host]
) -> None:
    """Grafana is not installed in the rehearsal: this reads what it would run with."""
    problems: list[str] = []
    grafana_hosts = with_role(configured, "grafana")
    for config in grafana_hosts:
        host = hosts[config.name]
        ini = grafana_ini(host, config)
        if ini.get("auth.anonymous", "enabled", fallback="") != "false":
            problems.append(
                f"{config.name}: grafana.ini does not set [auth.anonymous] enabled=false"
            )
        if ini.get("users", "allow_sign_up", fallback="") != "false":  # no self-made accounts
            problems.append(f"{config.name}: grafana.ini does not set [users] allow_sign_up=false")
        program = host.program_config(
            config["grafana_program_name"], config["supervisor_include_dir"]
        ) or {"command": ""}
        if f"--config={config['grafana_config_dir']}/grafana.ini" not in program["command"]:
            problems.append(f"{config.name}: Grafana does not run with that grafana.ini")
        if re.search(r"GF_(AUTH|USERS)_", program.get("environment", "")):
            problems.append(f"{config.name}: the program's environment overrides auth settings")
    assert grafana_hosts, "no Grafana host in the rehearsal"
    assert not problems, report(problems)


# --- 7. Celery accepts JSON only -----------------------------------------------------------------


def test_celery_accepts_json_only(
    rehearsal: Rehearsal,
    configured: dict[str, HostConfig],
    hosts: dict[str, Host],
    client_app: Any,
) -> None:
    # roles/celery_worker names each worker process <pool>-<process_num>@<hostname>.
    nodes = {
        f"{pool['name']}-{index}@{hosts[c.name].read('/proc/sys/kernel/hostname').strip()}"
        for c in with_role(configured, "celery_worker")
        for pool in c["celery_worker_pools"]
        for index in range(int(pool.get("nodes", 1)))
    }
    # What every running worker process reports it accepts (remote control).
    replies = client_app.control.inspect(timeout=30, limit=len(nodes)).conf(with_defaults=True)
    assert set(replies or {}) == nodes
    for node, conf in sorted(replies.items()):
        assert conf["accept_content"] == ["json"], node
        assert conf["result_accept_content"] == ["json"], node
        serializers = {
            conf[k] for k in ("task_serializer", "result_serializer", "event_serializer")
        }
        assert serializers == {"json"}, node

    # What they do with a pickle: refuse it into the DLQ, unrun, on every pool's queue.
    store = store_for(Settings.from_env(rehearsal.client_env()))
    sent = {}
    with client_app.connection_for_write() as connection:
        producer = Producer(connection)
        for pool in rehearsal.pools:
            task_id, token = str(uuid.uuid4()), uuid.uuid4().hex[:8]
            headers = {"lang": "py", "task": "examples.record", "id": task_id, "retries": 0}
            queue = pool["queues"][0]
            producer.publish(
                pickle.dumps(((token,), {}, {})),
                exchange=queue,
                routing_key=queue,
                content_type="application/x-python-serialize",
                content_encoding="binary",
                headers={**headers, "root_id": task_id},
            )
            sent[task_id] = (queue, token)

    def entry(task_id: str) -> Any:
        try:
            return store.get(task_id)
        except UnknownEntryError:
            return None

    try:
        for task_id, (queue, token) in sent.items():
            dead = wait_until(lambda t=task_id: entry(t), timeout=90, what=f"pickle on {queue}")
            assert dead.reason == "undecodable", (queue, dead.reason)
            assert dead.exception_type == "kombu.exceptions.ContentDisallowed", queue
            assert dead.queue == queue
            ran = rehearsal.redis().lrange(f"worker_app:examples:ran:{token}", 0, -1)
            assert ran == [], f"a pickled task ran on {queue}"
    finally:
        for task_id in sent:
            store.remove(task_id)


# --- 8. Supervisor's control socket is not world-accessible ---------------------------------


def test_supervisor_control_socket_is_not_world_accessible(
    configured: dict[str, HostConfig], hosts: dict[str, Host]
) -> None:
    problems: list[str] = []
    refusals = 0
    for name, host in hosts.items():
        config = configured[name]
        conf_path = config["supervisor_conf_path"]
        conf = configparser.RawConfigParser()
        conf.read_string(host.read(conf_path))
        path = conf.get("unix_http_server", "file")
        sock = host.testinfra.file(path)
        owner = str(config["supervisor_socket_owner"]).split(":")[0]
        if not sock.is_socket or sock.user != owner or sock.mode & 0o007:
            problems.append(f"{name}: {path} is {sock.mode:04o} {sock.user}:{sock.group}")
        if sock.mode != int(str(config["supervisor_socket_mode"]), 8):
            wanted = config["supervisor_socket_mode"]
            problems.append(f"{name}: {path} mode {sock.mode:04o}, configured {wanted}")
        includes = host.run(f"cat {conf_path} {config['supervisor_include_dir']}/*.conf").stdout
        if re.search(r"^\s*\[inet_http_server\]", includes, re.MULTILINE):
            problems.append(f"{name}: supervisord also listens on TCP ([inet_http_server])")
        assert host.run(f"supervisorctl -c {conf_path} pid").rc == 0, f"{name}: root cannot"
        # No service user (nor nobody) can drive supervisord.
        users = {p.user for p in expected_programs(config).values()} | {"nobody"}
        for user in sorted(users):
            out = host.run(f"runuser -u {user} -- supervisorctl -c {conf_path} pid")
            refusals += 1
            if out.rc == 0 or "Permission denied" not in out.stdout + out.stderr:
                problems.append(f"{name}: {user} can use supervisorctl: {out.stdout}{out.stderr}")
    assert refusals > len(configured), "no service user tried"
    assert not problems, report(problems)
