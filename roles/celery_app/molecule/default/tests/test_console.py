"""Verifiers for the console role: the program, its address, authentication, its files."""

import os
import re
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

PORT = 5580
ADMIN = ("admin", "molecule-console-admin-0001")
PROMETHEUS = ("prometheus", "molecule-console-prometheus-0001")
ADDRESS_COMMAND = "python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'"


def private_address(host):
    """The container's own address (what converge.yml gave as console_address)."""
    return host.check_output(ADDRESS_COMMAND).strip()


def curl(host, path, *args):
    """``curl`` to the console on the private address: (status, body), waiting for it to answer."""
    url = f"http://{private_address(host)}:{PORT}{path}"
    for _ in range(30):
        out = host.run(f"curl -s -w '\\n%{{http_code}}' {' '.join(args)} {url}")
        body, _, status = out.stdout.rpartition("\n")
        if status.strip() not in ("", "000"):
            return int(status), body
        time.sleep(1)
    raise AssertionError(f"the console does not answer at {url}")


def test_runs_as_the_service_user_under_supervisor(host, app_module):
    status = host.check_output("supervisorctl status worker-app-console")
    assert "RUNNING" in status
    command = f"[w]orker-app -A {app_module} web serve"
    lines = host.check_output(f"ps -eo user:20,args | grep '{command}'")
    rows = [line for line in lines.splitlines() if "/bin/sh" not in line]
    assert [row.split()[0] for row in rows] == ["celery"]


def test_binds_only_the_private_address(host):
    address = private_address(host)
    assert address != "127.0.0.1"
    curl(host, "/login")
    listening = host.check_output("ss -Htln | awk '{print $4}'").split()
    assert [a for a in listening if a.endswith(f":{PORT}")] == [f"{address}:{PORT}"]
    refused = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{PORT}/login")
    assert refused.stdout.strip() == "000"


def test_serves_the_login_page_and_links_to_flower_after_login(host):
    status, body = curl(host, "/login")
    assert status == 200
    assert 'name="csrf_token"' in body
    # Not logged in: every page sends to the login page.
    status, _ = curl(host, "/dead-letters")
    assert status == 302
    # Log in as the admin of the users file (cookie jar and CSRF token, as a browser does).
    jar = "/tmp/console-cookies"
    host.run(f"rm -f {jar}")
    _, login = curl(host, "/login", "-c", jar, "-b", jar)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
    form = (
        f"--data-urlencode name={ADMIN[0]} --data-urlencode password={ADMIN[1]} "
        f"--data-urlencode csrf_token={token}"
    )
    status, _ = curl(host, "/login", "-c", jar, "-b", jar, form)
    assert status == 302
    status, page = curl(host, "/dead-letters", "-b", jar)
    assert status == 200
    assert 'href="http://127.0.0.1:5555"' in page


def test_refuses_the_api_and_metrics_without_valid_credentials(host):
    for path in ("/api/health", "/metrics"):
        assert curl(host, path)[0] == 401, path
        assert curl(host, path, "-u", f"{ADMIN[0]}:wrong-password")[0] == 401, path
    # Prometheus' read-only user reads the request metrics.
    status, body = curl(host, "/metrics", "-u", ":".join(PROMETHEUS))
    assert status == 200
    assert "# TYPE" in body


def test_files_are_not_world_readable(host):
    for path in (
        "/etc/worker-app/console-users.yml",
        "/etc/worker-app/console-secret-key",
        "/etc/worker-app/console.env",
    ):
        found = host.file(path)
        assert (found.user, found.group, found.mode) == ("root", "celery", 0o640), path
    users = host.file("/etc/worker-app/console-users.yml").content_string
    assert "molecule-console-admin-0001" not in users
    assert "pbkdf2:sha256:" in users
