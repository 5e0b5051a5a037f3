"""The roles' one-run file module (roles/supervisor/library/stack_files.py), through real
ansible-playbook runs on the controller: it writes what it is given with the attributes asked,
changes nothing the second time, changes nothing in check mode, keeps the old file when
``validate`` refuses the new one, hides secrets from the diff, and prunes only its set's files.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(tmp_path: Path, args: dict[str, Any], *flags: str) -> dict[str, Any]:
    """One ``stack_files`` task on the local host; its result (``failed`` set on failure)."""
    play = tmp_path / "play.yml"
    task = {"name": "files", "stack_files": args, "register": "out", "ignore_errors": True}
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                     "tasks": [task]}]))  # fmt: skip
    env = {**os.environ, "ANSIBLE_LIBRARY": str(ROOT / "roles/supervisor/library"),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable}  # fmt: skip
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", *flags, str(play)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_directories_are_written_once_with_their_modes(tmp_path: Path) -> None:
    conf, secret = tmp_path / "etc/app/app.conf", tmp_path / "etc/app/secret"
    args = {
        "directories": [{"path": str(tmp_path / "etc/app"), "owner": "root", "mode": "0750"}],
        "files": [
            {"dest": str(conf), "content": "a = 1\n", "mode": "0644"},
            {
                "dest": str(secret),
                "content": "s3cret\n",
                "owner": "root",
                "group": "root",
                "mode": 0o600,
            },
        ],
    }
    first = run(tmp_path, args)
    assert first["changed"] is True and not first.get("failed")
    assert first["changed_paths"] == [str(tmp_path / "etc/app"), str(conf), str(secret)]
    assert conf.read_text() == "a = 1\n" and secret.read_text() == "s3cret\n"
    assert (mode_of(tmp_path / "etc/app"), mode_of(conf), mode_of(secret)) == (0o750, 0o644, 0o600)
    again = run(tmp_path, args)
    assert again["changed"] is False and again["changed_paths"] == []

    # A mode changed by hand is put back, and only that is reported.
    conf.chmod(0o666)
    fixed = run(tmp_path, args, "--diff")
    assert fixed["changed_paths"] == [str(conf)] and mode_of(conf) == 0o644
    assert fixed["diff"][0]["before"] == "owner root, group root, mode 0666\n"
    assert fixed["diff"][0]["after"] == "owner root, group root, mode 0644\n"
    assert conf.read_text() == "a = 1\n"


def test_check_mode_reports_the_change_and_its_diff_and_writes_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text("a = 1\n")
    args = {"files": [{"dest": str(conf), "content": "a = 2\n"}],
            "directories": [{"path": str(tmp_path / "new")}]}  # fmt: skip
    checked = run(tmp_path, args, "--check", "--diff")
    assert checked["changed"] is True
    assert checked["changed_paths"] == [str(tmp_path / "new"), str(conf)]
    assert checked["diff"] == [
        {"before_header": str(tmp_path / "new"), "after_header": str(tmp_path / "new"),
         "before": "(absent)\n", "after": "(directory)\n"},
        {"before_header": str(conf), "after_header": str(conf),
         "before": "a = 1\n", "after": "a = 2\n"},
    ]  # fmt: skip
    assert conf.read_text() == "a = 1\n" and not (tmp_path / "new").exists()


def test_secrets_stay_out_of_the_diff(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("old-password\n")
    args = {"files": [{"dest": str(secret), "content": "new-password\n", "mode": "0600"}],
            "show_content": False}  # fmt: skip
    result = run(tmp_path, args, "--diff")
    assert result["changed"] is True and secret.read_text() == "new-password\n"
    # The task's own arguments are hidden by its no_log, as for any module.
    assert result["diff"] == [
        {
            "before_header": str(secret),
            "after_header": str(secret),
            "before": "(content hidden)\n",
            "after": "(content hidden)\n",
        }
    ]


def test_a_file_shows_or_hides_its_own_content(tmp_path: Path) -> None:
    conf, secret = tmp_path / "app.conf", tmp_path / "users.acl"
    args = {
        "files": [
            {"dest": str(conf), "content": "a = 2\n"},
            {"dest": str(secret), "content": "user x on #hash\n", "show_content": False},
        ]
    }
    result = run(tmp_path, args, "--diff")
    assert [(d["before"], d["after"]) for d in result["diff"]] == [
        ("", "a = 2\n"), ("", "(content hidden)\n")]  # fmt: skip


def test_force_false_writes_only_a_missing_file(tmp_path: Path) -> None:
    owned = tmp_path / "sentinel.conf"
    args = {"files": [{"dest": str(owned), "content": "initial\n", "mode": "0640", "force": False}]}
    first = run(tmp_path, args)
    assert first["changed_paths"] == [str(owned)] and owned.read_text() == "initial\n"
    # The program that owns the file rewrote it (and its mode): left as it is.
    owned.write_text("rewritten by its owner\n")
    owned.chmod(0o600)
    again = run(tmp_path, args)
    assert again["changed"] is False and owned.read_text() == "rewritten by its owner\n"
    assert mode_of(owned) == 0o600


def test_a_file_validate_refuses_is_not_installed(tmp_path: Path) -> None:
    conf = tmp_path / "program.conf"
    conf.write_text("[program:good]\n")
    checker = "grep -q '^\\[program:' %s"
    refused = run(tmp_path, {"files": [{"dest": str(conf), "content": "garbage\n",
                                        "validate": checker}]})  # fmt: skip
    assert refused.get("failed") is True and "failed to validate" in refused["msg"]
    assert conf.read_text() == "[program:good]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["play.yml", "program.conf"]
    accepted = run(tmp_path, {"files": [{"dest": str(conf), "content": "[program:new]\n",
                                         "validate": checker}]})  # fmt: skip
    assert accepted["changed"] is True and conf.read_text() == "[program:new]\n"


def test_prune_removes_only_the_unlisted_files_of_its_set(tmp_path: Path) -> None:
    include = tmp_path / "programs.d"
    include.mkdir()
    (include / "kept.conf").write_text("; program set: workers\n[program:kept]\n")
    (include / "gone.conf").write_text("; program set: workers\n[program:gone]\n")
    (include / "other.conf").write_text("; program set: beat\n[program:other]\n")
    (include / "notes.txt").write_text("; program set: workers\n")
    (include / "absent.conf").write_text("[program:absent]\n")
    args = {
        "files": [{"dest": str(include / "kept.conf"),
                   "content": "; program set: workers\n[program:kept]\n"}],
        "absent": [str(include / "absent.conf"), str(include / "never-there.conf")],
        "prune": [{"path": str(include), "patterns": ["*.conf"],
                   "contains": "^; program set: workers$"}],
    }  # fmt: skip
    result = run(tmp_path, args, "--diff")
    assert result["changed_paths"] == [str(include / "absent.conf"), str(include / "gone.conf")]
    assert [(d["before"], d["after"]) for d in result["diff"]] == [
        ("(present)\n", "(absent)\n")
    ] * 2
    assert sorted(p.name for p in include.iterdir()) == ["kept.conf", "notes.txt", "other.conf"]
    assert run(tmp_path, args)["changed"] is False


def test_bad_input_fails_with_one_clear_line(tmp_path: Path) -> None:
    no_user = run(tmp_path, {"files": [{"dest": str(tmp_path / "f"), "content": "x",
                                        "owner": "no-such-user-here"}]})  # fmt: skip
    assert no_user.get("failed") and "no such user 'no-such-user-here'" in no_user["msg"]
    # In check mode the user may come from an earlier task of the real run: a warning.
    checked = run(tmp_path, {"files": [{"dest": str(tmp_path / "f"), "content": "x",
                                        "owner": "no-such-user-here"}]}, "--check")  # fmt: skip
    assert not checked.get("failed") and checked["changed"] is True
    assert "no owner 'no-such-user-here' yet" in " ".join(checked["warnings"])
    bad_mode = run(tmp_path, {"files": [{"dest": str(tmp_path / "f"), "content": "x",
                                         "mode": "rw-r--r--"}]})  # fmt: skip
    assert bad_mode.get("failed") and "is not an octal string" in bad_mode["msg"]
    no_content = run(tmp_path, {"files": [{"dest": str(tmp_path / "f")}]})
    assert no_content.get("failed") and "needs dest and content" in no_content["msg"]
    assert not (tmp_path / "f").exists()
