"""The roles as the Ansible collection celery_bundle.celery_stack (issue 18, item 3).

`make collection` builds the tarball into a temporary directory and `ansible-galaxy collection
install --no-deps` puts it into a fresh one. The installed collection holds every role of
roles/ (and none of their molecule scenarios); the staged collection passes ansible-lint's
production profile (galaxy metadata included, its FQCN playbooks resolved); its playbooks are
the bundle's tiers with FQCN role names and parse against the installed roles; the version is
pyproject.toml's and the collection ranges are met by the pinned ansible package. Then a
playbook that names roles only by FQCN converges a real Debian 12 container
(celery-stack/host:bookworm, as the molecule scenarios) with ANSIBLE_ROLES_PATH an empty
directory, so nothing can come from the repository's roles/: supervisor runs Redis, which
answers its Celery user and refuses anonymous clients, and a second run changes nothing.
Docker is required (`make engine`): without it the converge test fails, it is never skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ansible.release
import pytest
import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements

from tests.support.ansible_output import recap
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FQCN = "celery_bundle.celery_stack"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
IMAGE = "celery-stack/host:bookworm"


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def ansible_env(collections: Path, roles: Path, config: Path | None = None) -> dict[str, str]:
    """The environment minus any ANSIBLE_* setting of the caller: collections from
    ``collections`` (and the ansible package's own), roles from ``roles`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_ROLES_PATH=str(roles),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    if config is not None:
        env["ANSIBLE_CONFIG"] = str(config)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball `make collection` builds (into a temporary COLLECTION_DIR)."""
    out = tmp_path_factory.mktemp("collection-build")
    proc = run(["make", "-s", "--no-print-directory", "collection", f"COLLECTION_DIR={out}"],
               cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tarball = Path(proc.stdout.strip().splitlines()[-1])
    assert tarball == out / f"celery_bundle-celery_stack-{VERSION}.tar.gz", proc.stdout
    assert tarball.is_file()
    return tarball


@pytest.fixture(scope="module")
def installed(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh collections directory with the tarball installed in it."""
    collections = tmp_path_factory.mktemp("collections")
    proc = run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps",
                "-p", str(collections), str(built)])  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{FQCN}:{VERSION} was installed successfully" in proc.stdout, proc.stdout
    return collections


@pytest.fixture(scope="module")
def no_roles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty roles path: a role that is not in the collection cannot be found."""
    return tmp_path_factory.mktemp("no-roles")


def test_the_tarball_carries_pyprojects_version_and_the_collection_metadata(built: Path) -> None:
    with tarfile.open(built) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
        changelog = tar.extractfile("CHANGELOG.md").read().decode()  # type: ignore[union-attr]
    info = manifest["collection_info"]
    galaxy = yaml.safe_load((ROOT / "collection" / "galaxy.yml").read_text())
    assert "version" not in galaxy, "the version is pyproject.toml's, written when staged"
    assert [info["namespace"], info["name"], info["version"]] == [*FQCN.split("."), VERSION]
    assert info["dependencies"] == galaxy["dependencies"]
    assert f"\n## {VERSION}\n" in changelog, "CHANGELOG.md has no section for this version"


def files_of(directory: Path) -> set[str]:
    """Every file under ``directory`` (relative), without molecule scenarios, caches and the
    roles' module (``library/``: a collection keeps it in plugins/modules)."""
    return {
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file()
        and not {"molecule", "__pycache__", "library"} & set(p.relative_to(directory).parts)
        and p.suffix != ".pyc"
    }


def test_the_installed_collection_has_every_role_file_for_file(installed: Path) -> None:
    tree = installed / "ansible_collections" / "celery_bundle" / "celery_stack"
    assert sorted(p.name for p in (tree / "roles").iterdir()) == ROLES
    for role in ROLES:
        assert files_of(tree / "roles" / role) == files_of(ROOT / "roles" / role), role
    leftovers = [p for p in tree.rglob("*") if p.name in ("molecule", "__pycache__")
                 or p.suffix == ".pyc"]  # fmt: skip
    assert leftovers == []
    top = {"CHANGELOG.md", "FILES.json", "MANIFEST.json", "README.md", "meta", "playbooks",
           "plugins", "roles"}  # fmt: skip
    assert {p.name for p in tree.iterdir()} == top
    # The roles' one module, once, where a collection's roles find it.
    copies = [str(p.relative_to(tree)) for p in tree.rglob("stack_files.py")]
    assert copies == ["plugins/modules/stack_files.py"]
    module = ROOT / "roles" / "supervisor" / "library" / "stack_files.py"
    assert (tree / "plugins/modules/stack_files.py").read_bytes() == module.read_bytes()
    runtime = yaml.safe_load((tree / "meta" / "runtime.yml").read_text())
    assert meets_requirements(ansible.release.__version__, runtime["requires_ansible"])


def test_ansible_doc_lists_every_role_with_argument_specs(installed: Path, no_roles: Path) -> None:
    proc = run([str(BIN / "ansible-doc"), "-t", "role", "-l", FQCN, "--json"],
               env=ansible_env(installed, no_roles))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = json.loads(proc.stdout)
    specified = [r for r in ROLES if (ROOT / "roles" / r / "meta" / "argument_specs.yml").is_file()]
    assert sorted(listed) == [f"{FQCN}.{role}" for role in specified]
    assert all(entry["entry_points"].get("main") for entry in listed.values()), listed


def role_references(path: Path) -> list[str]:
    """The roles a playbook names: in `roles:` and in include_role/import_role tasks."""
    names = []
    for play in yaml.safe_load(path.read_text()):
        names += [entry["role"] for entry in play.get("roles", [])]
        for task in play.get("tasks", []) + play.get("pre_tasks", []) + play.get("post_tasks", []):
            for action in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                if action in task:
                    names.append(task[action]["name"])
    return names


def test_the_playbooks_name_only_roles_of_the_collection_by_fqcn(installed: Path) -> None:
    playbooks = installed / "ansible_collections" / "celery_bundle" / "celery_stack" / "playbooks"
    tiers = sorted(p.stem for p in playbooks.glob("*.yml") if p.stem != "site")
    site = [play["ansible.builtin.import_playbook"] for play in
            yaml.safe_load((playbooks / "site.yml").read_text())]  # fmt: skip
    assert sorted(site) == [f"{FQCN}.{tier}" for tier in tiers], "site imports every tier once"
    named = set()
    for tier in tiers:
        roles = role_references(playbooks / f"{tier}.yml")
        assert roles, tier
        assert [r for r in roles if r.removeprefix(f"{FQCN}.") not in ROLES] == [], tier
        named |= set(roles)
    # The bundle's host groups: each tier is one play on the group of the same name.
    for tier in tiers:
        hosts = [play["hosts"] for play in yaml.safe_load((playbooks / f"{tier}.yml").read_text())]
        assert hosts == ["all" if tier == "base" else tier], tier
    assert f"{FQCN}.supervisor" in named


def test_the_playbooks_parse_with_the_installed_roles_only(installed: Path, no_roles: Path,
                                                          tmp_path: Path) -> None:  # fmt: skip
    names = [f"{FQCN}.{p.stem}" for p in sorted((ROOT / "collection" / "playbooks").glob("*.yml"))]
    proc = run([str(BIN / "ansible-playbook"), "-i", "localhost,", "--syntax-check", *names],
               cwd=tmp_path, env=ansible_env(installed, no_roles))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Without the collection the same playbooks cannot be loaded: the check above is real.
    proc = run([str(BIN / "ansible-playbook"), "-i", "localhost,", "--syntax-check",
                str(ROOT / "collection" / "playbooks" / "base.yml")],
               cwd=tmp_path, env=ansible_env(tmp_path, no_roles))  # fmt: skip
    assert proc.returncode != 0
    assert f"{FQCN}.supervisor" in proc.stdout + proc.stderr


def test_the_staged_collection_passes_ansible_lint(built: Path) -> None:
    staging = built.parent / "staging"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # galaxy[no-repository]: the project names no public repository URL yet.
    proc = run([str(BIN / "ansible-lint"), "--project-dir", str(staging), "--profile",
                "production", "--skip-list", "galaxy[no-repository]", "galaxy.yml", "meta",
                "playbooks"], cwd=staging, env=env)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output, output


def test_the_collection_ranges_are_met_by_the_pinned_ansible() -> None:
    proc = run([str(BIN / "ansible-galaxy"), "collection", "list", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    bundled = {name: info["version"] for path in json.loads(proc.stdout).values()
               for name, info in path.items()}  # fmt: skip
    wanted = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    for entry in wanted:
        assert meets_requirements(bundled[entry["name"]], entry["version"]), entry
        assert entry["version"].startswith(f">={bundled[entry['name']]},"), entry
    galaxy = yaml.safe_load((ROOT / "collection" / "galaxy.yml").read_text())
    ranges = {entry["name"]: entry["version"] for entry in wanted}
    assert {name: ranges.get(name) for name in galaxy["dependencies"]} == galaxy["dependencies"]
    runtime = yaml.safe_load((ROOT / "collection" / "meta" / "runtime.yml").read_text())
    pinned = re.search(r"^ansible-core==(\d+)\.(\d+)\.", (ROOT / "requirements" / "dev.txt")
                       .read_text(), re.MULTILINE)  # fmt: skip
    assert pinned, "requirements/dev.txt pins no ansible-core"
    assert runtime["requires_ansible"] == f">={pinned[1]}.{pinned[2]}.0"


@pytest.fixture
def host() -> Iterator[str]:
    """A throw-away Debian 12 host container (removed whatever happens)."""
    proc = run([str(ROOT / "docker" / "host-images.sh"), "bookworm"], timeout=900)
    assert proc.returncode == 0, f"{IMAGE} is needed (make engine host-images):\n{proc.stderr}"
    name = f"collection-test-{uuid.uuid4().hex[:8]}"
    proc = run(["docker", "run", "-d", "--name", name, "--label", "celery-stack.test=collection",
                IMAGE, "sleep", "infinity"], timeout=120)  # fmt: skip
    try:
        assert proc.returncode == 0, proc.stderr
        yield name
    finally:
        run(["docker", "rm", "-f", name], timeout=120)


def redis_cli(container: str, *args: str) -> str:
    proc = run(["docker", "exec", container, "redis-cli", "-h", "127.0.0.1", "-p", "6379",
                *args, "ping"], timeout=30)  # fmt: skip
    return proc.stdout + proc.stderr


def test_a_playbook_of_fqcn_roles_converges_a_debian_host(
    installed: Path, no_roles: Path, host: str, tmp_path: Path
) -> None:
    # The variables the redis molecule scenario converges with (the shared molecule base).
    base = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())
    variables = {k: v for k, v in base["provisioner"]["inventory"]["group_vars"]["all"].items()
                 if k.startswith("redis_")}  # fmt: skip
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"target": {"ansible_connection": "community.docker.docker",
                             "ansible_host": host}},
        "vars": variables}}))  # fmt: skip
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Supervisor and Redis from the installed collection", "hosts": "all",
        "gather_facts": False,
        "roles": [{"role": f"{FQCN}.supervisor"}, {"role": f"{FQCN}.redis"}]}]))  # fmt: skip
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\ninterpreter_python = auto_silent\n"
                      "[connection]\npipelining = true\n")  # fmt: skip
    env = ansible_env(installed, no_roles, config)
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]

    first = run(command, cwd=tmp_path, env=env, timeout=600)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    counts = recap(output)["target"]
    assert counts["failed"] == counts["unreachable"] == 0, output
    assert counts["changed"] > 0, output
    # The redis role includes `supervisor` by its short name: it resolved inside the collection.
    assert f"TASK [{FQCN}.supervisor : Validating arguments against arg spec 'programs'" in output

    def running() -> bool:  # supervisor says RUNNING once startsecs (2 s) have passed
        status = run(["docker", "exec", host, "supervisorctl", "status", "redis"], timeout=30)
        return re.search(r"^redis\s+RUNNING", status.stdout) is not None

    wait_until(running, timeout=30, interval=0.5, what="supervisor reports redis RUNNING")
    celery = ["--user", "celery", "--pass", variables["redis_celery_password"], "--no-auth-warning"]
    assert redis_cli(host, *celery).strip() == "PONG"
    assert "NOAUTH" in redis_cli(host)

    second = run(command, cwd=tmp_path, env=env, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert recap(output)["target"] == {"changed": 0, "failed": 0, "unreachable": 0}, output
