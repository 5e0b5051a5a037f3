"""The console's users: names, password hashes and roles from a YAML file.

::

    users:
      alice: {password_hash: "scrypt:32768:8:1$...", role: admin}
      bob: {password_hash: "scrypt:32768:8:1$...", role: read-only}

Hashes are Werkzeug's (``worker-app web hash-password`` makes one); a plain ``password`` is
refused, and there is no default user. ``admin`` may replay, delete, purge and revoke;
``read-only`` sees everything and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from werkzeug.security import check_password_hash, generate_password_hash

ROLES = ("admin", "read-only")
_HASH_METHODS = ("scrypt:", "pbkdf2:")
_NAME_LIMIT = 64


class UsersFileError(ValueError):
    """The users file cannot be used (one line that names the file and what is wrong)."""


@dataclass(frozen=True)
class User:
    """A console user."""

    name: str
    password_hash: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def parse_users(data: Any, source: str) -> dict[str, User]:
    """The users of ``data`` (the YAML document of ``source``)."""
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise UsersFileError(f"{source}: expected a mapping 'users: {{name: {{...}}}}'")
    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise UsersFileError(f"{source}: unknown key {unknown[0]!r} (only 'users')")
    users = {}
    for name, spec in data["users"].items():
        where = f"{source}: user {name!r}"
        if not isinstance(name, str) or not name or len(name) > _NAME_LIMIT or ":" in name:
            raise UsersFileError(f"{where}: a name is 1-{_NAME_LIMIT} characters without ':'")
        if not isinstance(spec, dict):
            raise UsersFileError(f"{where}: expected {{password_hash: ..., role: ...}}")
        if "password" in spec:
            raise UsersFileError(
                f"{where}: plain passwords are refused; store password_hash "
                "(worker-app web hash-password)"
            )
        extra = sorted(set(spec) - {"password_hash", "role"})
        if extra:
            raise UsersFileError(f"{where}: unknown key {extra[0]!r}")
        password_hash, role = spec.get("password_hash"), spec.get("role")
        if not isinstance(password_hash, str) or not password_hash.startswith(_HASH_METHODS):
            raise UsersFileError(
                f"{where}: password_hash must be a Werkzeug hash (scrypt:... or pbkdf2:...)"
            )
        if role not in ROLES:
            raise UsersFileError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
        users[name] = User(name, password_hash, role)
    if not users:
        raise UsersFileError(f"{source}: no users (the console has no default user)")
    return users


def load_users(path: str | Path) -> dict[str, User]:
    """The users of the YAML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsersFileError(f"{path}: cannot read the users file: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsersFileError(f"{path}: not YAML: {error}") from None
    return parse_users(data, str(path))


def authenticate(users: dict[str, User], name: str, password: str) -> User | None:
    """The user ``name`` if ``password`` is theirs, else None (in about the same time)."""
    user = users.get(name)
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


@cache
def _dummy_hash() -> str:
    """Checked when the name is unknown: an unknown user costs as long as a wrong password."""
    return generate_password_hash("no user has this password")


def hash_password(password: str) -> str:
    """A hash for the users file."""
    if len(password) < 12:
        raise ValueError("a console password has at least 12 characters")
    return generate_password_hash(password)
