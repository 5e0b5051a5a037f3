"""The console's users file: hashes only, known roles, no default user, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker_app.web.users import (
    UsersFileError,
    authenticate,
    hash_password,
    load_users,
    parse_users,
)

ALICE = hash_password("alice-long-password")
BOB = hash_password("bob-long-password!")


def test_users_log_in_with_their_password_only(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    path.write_text(
        f"users:\n  alice: {{password_hash: '{ALICE}', role: admin}}\n"
        f"  bob: {{password_hash: '{BOB}', role: read-only}}\n"
    )
    users = load_users(path)
    alice = authenticate(users, "alice", "alice-long-password")
    assert alice is not None and alice.admin
    bob = authenticate(users, "bob", "bob-long-password!")
    assert bob is not None and not bob.admin
    assert authenticate(users, "alice", "bob-long-password!") is None
    assert authenticate(users, "carol", "alice-long-password") is None
    assert authenticate(users, "alice", "") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "expected a mapping 'users"),
        ({"users": {}}, "no users"),
        ({"users": {"a": {"password_hash": ALICE, "role": "admin"}}, "extra": 1}, "unknown key"),
        ({"users": {"a": {"password": "secret", "role": "admin"}}}, "plain passwords are refused"),
        ({"users": {"a": {"password_hash": "5f4dcc3b5aa7", "role": "admin"}}}, "Werkzeug hash"),
        ({"users": {"a": {"password_hash": ALICE, "role": "root"}}}, "role must be one of"),
        ({"users": {"a": {"password_hash": ALICE}}}, "role must be one of"),
        ({"users": {"a:b": {"password_hash": ALICE, "role": "admin"}}}, "without ':'"),
        ({"users": {"a": "admin"}}, "expected {password_hash"),
        ({"users": {"a": {"password_hash": ALICE, "role": "admin", "x": 1}}}, "unknown key 'x'"),
    ],
)
def test_bad_users_files_say_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(UsersFileError, match=message):
        parse_users(data, "users.yml")


def test_unreadable_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="cannot read the users file"):
        load_users(tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("users: [unclosed\n")
    with pytest.raises(UsersFileError, match="not YAML"):
        load_users(broken)


def test_short_passwords_get_no_hash() -> None:
    with pytest.raises(ValueError, match="at least 12 characters"):
        hash_password("short")
    assert hash_password("twelve-chars").startswith("scrypt:")


def test_the_cli_prints_a_hash_and_refuses_a_short_password() -> None:
    from click.testing import CliRunner  # noqa: PLC0415
    from werkzeug.security import check_password_hash  # noqa: PLC0415

    from worker_app.cli import main  # noqa: PLC0415

    runner = CliRunner()
    result = runner.invoke(main, ["web", "hash-password", "--stdin"], input="a-long-password\n")
    assert result.exit_code == 0, result.output
    assert check_password_hash(result.output.strip(), "a-long-password")
    refused = runner.invoke(main, ["web", "hash-password", "--stdin"], input="short\n")
    assert refused.exit_code == 2 and "at least 12 characters" in refused.output
