"""`make upstream` / `make upstream-celery`: an upstream project's own integration tests, stock
and with worker_app's transport.

``python -m tests.upstream.run [kombu|celery] [--subset]``

Fetches the source distribution of the version pinned in ``requirements/runtime.txt`` with pip
(the host's own index configuration), starts a private ``redis-server`` per run on a free
loopback port, and runs the suite twice at once (each run on its own server): once as the
project ships, once with ``-p tests.upstream.swap_transport`` (worker_app's transport serves
``redis://``; the project's files are not touched). Prints both side by side and every test
that passes stock and fails with the transport, grouped by the first line of its error.

kombu (``make upstream``): ``t/integration/test_redis.py`` and ``test_redis_brpop_qos.py``.

celery (``make upstream-celery``, see :mod:`tests.upstream.celery_suite`): Celery's
``t/integration`` with a Redis broker and result backend and the suite's own in-process worker,
in a separate virtualenv (``build/upstream/venv-celery``) with the suite's test-only packages
pinned in ``tests/upstream/celery-requirements.txt``. A test that passes stock and fails with
the transport is run once more both ways before it counts; the output says so.

Exit status 1 when such a test is not listed, with its reason, in
``tests/upstream/<suite>-exclusions.txt``, or when an exclusion has gone stale.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.redis_server import RedisServer, start_redis

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PLUGIN = "tests.upstream.swap_transport"
#: The swapped run's marker line (the plugin prints it at the end of the session).
SERVED_BY = re.compile(r"^worker_app transport: (\d+) connection\(s\) established", re.MULTILINE)

Outcomes = dict[str, tuple[str, str]]


@dataclass(frozen=True)
class Suite:
    """How to run one upstream project's suite against a Redis on ``port``."""

    package: str
    #: pytest arguments after the options (files, -k ...).
    tests: tuple[str, ...]
    #: Environment of a run against the Redis on port.
    env: Callable[[int], dict[str, str]]
    #: The interpreter that runs pytest (source dir, workdir) -> python.
    python: Callable[[Path, Path], str] = lambda source, workdir: sys.executable
    timeout: int = 60
    options: tuple[str, ...] = ()
    #: Run a test that flipped (passed stock, failed ours) once more both ways.
    rerun_flips: bool = False
    #: Extra entries on PYTHONPATH of the swapped run (its subprocesses get the transport too).
    swapped_path: tuple[str, ...] = field(default=())

    @property
    def exclusions_file(self) -> Path:
        """Reviewed exclusions of this suite."""
        return HERE / f"{self.package}-exclusions.txt"


def kombu_suite() -> Suite:
    """kombu's Redis integration tests (make upstream)."""
    return Suite(
        package="kombu",
        tests=("t/integration/test_redis.py", "t/integration/test_redis_brpop_qos.py"),
        env=lambda port: {"REDIS_HOST": "127.0.0.1", "REDIS_6379_TCP": str(port)},
    )


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


def start_suite(
    suite: Suite,
    source: Path,
    workdir: Path,
    port: int,
    name: str,
    swapped: bool,
    tests: tuple[str, ...],
) -> subprocess.Popen[bytes]:
    """Start the suite against the Redis on ``port``, writing ``name``.xml and ``name``.log."""
    path = [*(suite.swapped_path if swapped else ()), str(ROOT), os.environ.get("PYTHONPATH")]
    python = suite.python(source, workdir)
    env = {
        **os.environ,
        **suite.env(port),
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
        # The suite's subprocesses run `celery ...`: the one of the suite's interpreter.
        "PATH": os.pathsep.join(filter(None, [str(Path(python).parent), os.environ.get("PATH")])),
    }
    command = [python, "-m", "pytest", "-p", "no:cacheprovider",
               "-o", "addopts=", "-rfEs", "--timeout", str(suite.timeout),
               f"--junitxml={workdir / f'{name}.xml'}", *suite.options, *tests]  # fmt: skip
    if swapped:
        command[3:3] = ["-p", PLUGIN]
    log = (workdir / f"{name}.log").open("wb")
    return subprocess.Popen(command, cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)


def outcomes(report: Path, source: Path) -> Outcomes:
    """Test id (``file::Class::name``) -> (passed|failed|error|skipped, first error line)."""
    found: Outcomes = {}
    if not report.is_file():
        return found
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our pytest wrote it
        test_id = _test_id(source, case.get("classname", ""), case.get("name", ""))
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                outcome = "failed" if kind == "failure" else kind
                message = (child.get("message") or "").strip().split("\n")[0][:160]
                break
        # A test that failed and then errored in teardown has two children: failed wins.
        if test_id in found and found[test_id][0] != "passed":
            continue
        found[test_id] = (outcome, message)
    return found


def _test_id(source: Path, classname: str, name: str) -> str:
    """pytest's id from junit's dotted class name: the longest prefix that is a file of the
    suite is the module (kombu's and Celery's test classes are named ``test_...`` too)."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        module = "/".join(parts[:n]) + ".py"
        if (source / module).is_file():
            return "::".join([module, *parts[n:], name])
    return f"{classname}::{name}"


def exclusions(path: Path) -> dict[str, str]:
    """Reviewed exclusions: test id -> reason."""
    listed: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        test_id, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{path}: no reason given for {test_id.strip()}")
        listed[test_id.strip()] = reason.strip()
    return listed


def tally(found: Outcomes) -> str:
    """``N passed, N failed, N skipped``."""
    count = Counter(outcome for outcome, _ in found.values())
    return (f"{count['passed']} passed, {count['failed'] + count['error']} failed, "
            f"{count['skipped']} skipped")  # fmt: skip


def run_both(
    suite: Suite,
    source: Path,
    workdir: Path,
    tests: tuple[str, ...],
    label: str,
    must_serve: bool = True,
) -> tuple[Outcomes, Outcomes]:
    """Stock and swapped at once, each on its own redis-server; (stock, ours). Files are
    named ``<package>-<stock|worker_app><label>.{xml,log}``: kombu's and Celery's suites may run
    at the same time in one workdir."""
    runs = {"stock": False, "worker_app": True}
    stem = {name: f"{suite.package}-{name}{label}" for name in runs}
    servers: dict[str, RedisServer] = {}
    results: dict[str, Outcomes] = {}
    began = time.monotonic()
    try:
        for name in runs:
            servers[name] = start_redis(workdir / f"redis-{stem[name]}")
        started = {
            name: start_suite(
                suite, source, workdir, servers[name].port, stem[name], swapped, tests
            )
            for name, swapped in runs.items()
        }
        for name, process in started.items():
            process.wait()
            results[name] = outcomes(workdir / f"{stem[name]}.xml", source)
            print(f"{suite.package} {pinned(suite.package)} integration (Redis){label}, "
                  f"{name} transport: {tally(results[name])} "
                  f"({time.monotonic() - began:.0f} s; log {workdir / f'{stem[name]}.log'})",
                  flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    check_served(workdir / f"{stem['worker_app']}.log", required=must_serve)
    return results["stock"], results["worker_app"]


def check_served(log: Path, *, required: bool = True) -> None:
    """The swapped run must have connected through worker_app's transport, or it proves
    nothing: the plugin prints how many connections the transport established. (Not required
    of a rerun of a few tests: one may connect only from a subprocess.)"""
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = SERVED_BY.search(text)
    if required and (found is None or int(found.group(1)) == 0):
        raise SystemExit(f"{log}: worker_app's transport served no connection in the swapped run")
    print(f"  swapped run: {found.group(0) if found else 'no count (the plugin did not report)'}")


def main() -> int:
    """Fetch, run both ways, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", nargs="?", choices=("kombu", "celery"), default="kombu")
    parser.add_argument("--subset", action="store_true", help="celery: the CI subset only")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "upstream")
    args = parser.parse_args()
    if args.suite == "celery":
        from tests.upstream.celery_suite import celery_suite  # noqa: PLC0415

        suite = celery_suite(subset=args.subset)
    else:
        suite = kombu_suite()
    version = pinned(suite.package)
    source = fetch(suite.package, version, args.workdir)
    label = "-subset" if args.subset else ""
    began = time.monotonic()
    stock, ours = run_both(suite, source, args.workdir, suite.tests, label)
    regressions = sorted(
        test_id for test_id, (outcome, _) in stock.items()
        if outcome == "passed" and ours.get(test_id, ("missing", ""))[0] != "passed"
    )  # fmt: skip
    if regressions and suite.rerun_flips:
        regressions = rerun(suite, source, args.workdir, regressions, label)
    report(suite, stock, ours, regressions)
    print(f"wall time {time.monotonic() - began:.0f} s")
    excluded = exclusions(suite.exclusions_file)
    unexplained = [test_id for test_id in regressions if test_id not in excluded]
    # Only tests that ran both ways can go stale (the subset runs a part of the suite).
    stale = sorted(test_id for test_id in set(excluded) - set(regressions) if test_id in ours)
    for test_id in stale:
        print(f"excluded but passing (drop it from {suite.exclusions_file.name}): {test_id}")
    print(f"\nRESULT: {len(unexplained)} regression(s) not excluded"
          + (f", {len(stale)} stale exclusion(s)" if stale else ""))  # fmt: skip
    return 1 if unexplained or stale else 0


def rerun(suite: Suite, source: Path, workdir: Path, flipped: list[str], label: str) -> list[str]:
    """Run the tests that passed stock and failed ours once more, both ways at once; the ones
    that pass stock and fail ours again are the regressions. Says what flipped."""
    print(f"\n{len(flipped)} test(s) passed stock and failed with worker_app's transport: "
          "running them once more, both ways")  # fmt: skip
    stock, ours = run_both(
        suite, source, workdir, tuple(flipped), f"{label}-rerun", must_serve=False
    )
    confirmed = []
    for test_id in flipped:
        again_stock = stock.get(test_id, ("missing", ""))[0]
        again_ours = ours.get(test_id, ("missing", ""))[0]
        if again_stock == "passed" and again_ours != "passed":
            confirmed.append(test_id)
            verdict = "fails again with ours: a regression"
        elif again_ours == "passed":
            verdict = "passes on the rerun with ours: flaky here (counted as passing, reported)"
        else:
            verdict = f"fails on the rerun stock too ({again_stock}): flaky on stock"
        print(f"  rerun {test_id}: stock {again_stock}, ours {again_ours} -> {verdict}")
    return confirmed


def report(suite: Suite, stock: Outcomes, ours: Outcomes, regressions: list[str]) -> None:
    """Regressions grouped by cause; tests that fail stock and pass ours."""
    excluded = exclusions(suite.exclusions_file)
    by_cause: dict[str, list[str]] = defaultdict(list)
    for test_id in regressions:
        by_cause[ours.get(test_id, ("missing", "not run"))[1] or "(no message)"].append(test_id)
    for cause, tests in sorted(by_cause.items(), key=lambda item: -len(item[1])):
        print(f"\n{len(tests)} pass on stock {suite.package}, fail with worker_app's transport: "
              f"{cause}")  # fmt: skip
        for test_id in tests:
            note = f"  (excluded: {excluded[test_id]})" if test_id in excluded else ""
            print(f"  {test_id}{note}")
    better = sorted(
        test_id for test_id, (outcome, _) in ours.items()
        if outcome == "passed" and stock.get(test_id, ("missing", ""))[0] in ("failed", "error")
    )  # fmt: skip
    if better:
        print(f"\n{len(better)} fail stock and pass with worker_app's transport (not compared):")
        for test_id in better:
            print(f"  {test_id}: stock {stock[test_id][1]}")


if __name__ == "__main__":
    sys.exit(main())
