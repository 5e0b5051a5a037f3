"""The example Django project deploys the versions the tests run it with."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[name.split("[")[0].strip().lower()] = version.split(";")[0].strip()
    return found


def test_the_example_projects_pins_equal_the_dev_environments() -> None:
    example = pins(ROOT / "examples" / "django_project" / "requirements.txt")
    dev = pins(ROOT / "requirements" / "dev.txt")
    assert {"django", "django-celery-beat", "psycopg"} <= set(example)
    assert {name: dev.get(name) for name in example} == example
