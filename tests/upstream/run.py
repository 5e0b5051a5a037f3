"""`make upstream`: kombu's own Redis integration tests, stock and with worker_app's transport.

Fetches the source distribution of the kombu version pinned in ``requirements/runtime.txt``
with pip (the host's own index configuration), starts a private ``redis-server`` on a free
loopback port, and runs kombu's ``t/integration/test_redis.py`` and
``test_redis_brpop_qos.py`` twice against it: once as kombu ships, once with
``-p tests.upstream.swap_transport`` (worker_app's transport serves ``redis://``; kombu's
files are not touched). Prints both side by side and every test that passes on stock kombu and
fails with the transport, grouped by the first line of its error.

Exit status 1 when such a test is not listed, with its reason, in
``tests/upstream/kombu-exclusions.txt``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

from tests.support.redis_server import start_redis

ROOT = Path(__file__).resolve().parents[2]
EXCLUSIONS = Path(__file__).with_name("kombu-exclusions.txt")
SUITE = ("t/integration/test_redis.py", "t/integration/test_redis_brpop_qos.py")
PLUGIN = "tests.upstream.swap_transport"


def pinned(package: str) -> str:
    """The version of ``package`` pinned in requirements/runtime.txt."""
    text = (ROOT / "requirements" / "runtime.txt").read_text()
    found = re.search(rf"^{re.escape(package)}==([^\s;]+)", text, re.MULTILINE | re.IGNORECASE)
    if found is None:
        raise SystemExit(f"{package} is not pinned in requirements/runtime.txt")
    return found.group(1)


def fetch(package: str, version: str, workdir: Path) -> Path:
    """The unpacked source distribution of ``package==version`` (downloaded once)."""
    source = workdir / f"{package}-{version}"
    if (source / "t" / "integration").is_dir():
        return source
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
         f"{package}=={version}", "-d", str(workdir)],
        check=True,
    )  # fmt: skip
    archive = workdir / f"{package}-{version}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return source


def start_suite(source: Path, port: int, report: Path, swapped: bool) -> subprocess.Popen[bytes]:
    """Start the suite against the Redis on ``port``, writing a junit report."""
    env = {
        **os.environ,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_6379_TCP": str(port),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--timeout", "60", f"--junitxml={report}", *SUITE]  # fmt: skip
    if swapped:
        command[3:3] = ["-p", PLUGIN]
    return subprocess.Popen(command, cwd=source, env=env, stdout=subprocess.DEVNULL)


def outcomes(report: Path, source: Path) -> dict[str, tuple[str, str]]:
    """Test id (``file::Class::name``) -> (passed|failed|error|skipped, first error line)."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our pytest wrote it
        test_id = _test_id(source, case.get("classname", ""), case.get("name", ""))
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                outcome = "failed" if kind == "failure" else kind
                message = (child.get("message") or "").strip().split("\n")[0][:160]
                break
        found[test_id] = (outcome, message)
    return found


def _test_id(source: Path, classname: str, name: str) -> str:
    """pytest's id from junit's dotted class name: the longest prefix that is a file of the
    suite is the module (kombu's test classes are named ``test_...`` too)."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        module = "/".join(parts[:n]) + ".py"
        if (source / module).is_file():
            return "::".join([module, *parts[n:], name])
    return f"{classname}::{name}"


def exclusions() -> dict[str, str]:
    """Reviewed exclusions: test id -> reason."""
    listed: dict[str, str] = {}
    for line in EXCLUSIONS.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        test_id, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{EXCLUSIONS}: no reason given for {test_id.strip()}")
        listed[test_id.strip()] = reason.strip()
    return listed


def main() -> int:
    """Fetch, run both ways, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "upstream")
    args = parser.parse_args()
    version = pinned("kombu")
    source = fetch("kombu", version, args.workdir)
    # Both runs at once, each on its own redis-server: the suite mostly waits.
    runs = {"stock": False, "worker_app": True}
    servers = {name: start_redis(args.workdir / f"redis-{name}") for name in runs}
    results = {}
    began = time.monotonic()
    try:
        started = {
            name: start_suite(source, servers[name].port, args.workdir / f"{name}.xml", swapped)
            for name, swapped in runs.items()
        }
        for name, process in started.items():
            process.wait()
            results[name] = outcomes(args.workdir / f"{name}.xml", source)
            tally = Counter(outcome for outcome, _ in results[name].values())
            print(f"kombu {version} integration (Redis), {name} transport: "
                  f"{tally['passed']} passed, {tally['failed'] + tally['error']} failed, "
                  f"{tally['skipped']} skipped ({time.monotonic() - began:.0f} s)")  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    stock, ours = results["stock"], results["worker_app"]
    excluded = exclusions()
    regressions = sorted(
        test_id for test_id, (outcome, _) in stock.items()
        if outcome == "passed" and ours.get(test_id, ("missing", ""))[0] != "passed"
    )  # fmt: skip
    by_cause: dict[str, list[str]] = defaultdict(list)
    for test_id in regressions:
        by_cause[ours.get(test_id, ("missing", "not run"))[1] or "(no message)"].append(test_id)
    for cause, tests in sorted(by_cause.items(), key=lambda item: -len(item[1])):
        print(f"\n{len(tests)} pass on stock kombu, fail with worker_app's transport: {cause}")
        for test_id in tests:
            note = f"  (excluded: {excluded[test_id]})" if test_id in excluded else ""
            print(f"  {test_id}{note}")
    unexplained = [test_id for test_id in regressions if test_id not in excluded]
    stale = sorted(set(excluded) - set(regressions))
    for test_id in stale:
        print(f"excluded but passing (drop it from {EXCLUSIONS.name}): {test_id}")
    print(f"\nRESULT: {len(unexplained)} regression(s) not excluded"
          + (f", {len(stale)} stale exclusion(s)" if stale else ""))  # fmt: skip
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
