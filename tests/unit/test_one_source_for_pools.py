"""No file but the pool catalogue names a pool: the alert rules, dashboards, playbooks, roles
and the docker stack read the catalogue (or series and groups derived from it).

Tests, documentation (READMEs) and comments are excepted: they show examples.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from worker_app.pools import load_catalogue

ROOT = Path(__file__).resolve().parents[2]
DIRECTORIES = ("prometheus", "grafana", "ansible", "docker", "roles", "alertmanager")


def names_pattern() -> re.Pattern[str]:
    catalogue = load_catalogue()
    names = "|".join(sorted({*catalogue.names, *catalogue.queue_names}))
    return re.compile(
        rf'(queue_name|queue|pool)\s*=~?\s*\\?"({names})\\?"'  # a selector or assignment
        rf"|workers_({names})\b"  # a host group
        rf"|--pool[ =]({names})\b"  # a worker command line
        rf"|\bworker-({names})\b"  # a compose service
        rf"|\bpool:\s*({names})\s*[,}}\n]"  # a label in YAML
    )


def checked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *DIRECTORIES],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [
        ROOT / name
        for name in listed
        if not name.endswith(".md")
        and "/tests/" not in f"/{name}"
        and not name.startswith("prometheus/tests/")
        and (ROOT / name).is_file()
    ]


def uncommented(path: Path) -> list[tuple[int, str]]:
    comment = "#" if path.suffix in {".yml", ".yaml", ".py", ".sh", ".j2", ".cfg", ""} else None
    lines = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if comment and line.lstrip().startswith(comment):
            continue
        lines.append((number, line))
    return lines


def test_no_file_but_the_catalogue_names_a_pool() -> None:
    pattern = names_pattern()
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in checked_files()
        for number, line in uncommented(path)
        if pattern.search(line)
    ]
    assert found == [], "pool names outside the catalogue:\n" + "\n".join(found)


def test_the_check_finds_a_pool_name() -> None:
    pattern = names_pattern()
    for line in (
        'expr: x{queue_name="critical"} > 5',
        "hosts: workers_critical:workers_high",
        'command: ["worker-app", "worker", "--pool", "low"]'.replace('", "', " "),
        "  worker-default:",
        "labels: {pool: low}",
    ):
        assert pattern.search(line), line
