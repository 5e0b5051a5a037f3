"""The API's cache of verified Basic credentials: a repeated request skips the hash check,
a wrong password is always checked and refused, entries expire, a changed hash invalidates."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery import Celery
from werkzeug.security import generate_password_hash

from worker_app.dlq.store import DeadLetterStore
from worker_app.web import users as users_module
from worker_app.web.app import create_console
from worker_app.web.credential_cache import CredentialCache
from worker_app.web.users import User

PASSWORD = "unit-long-password"  # noqa: S105 - test credentials
OTHER = "another-long-password"


def user(password: str = PASSWORD) -> dict[str, User]:
    return {"viewer": User("viewer", generate_password_hash(password, "pbkdf2:sha256:1000"),
                           "read-only")}  # fmt: skip


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password hash check, by the hash checked (Werkzeug's check still runs)."""
    calls: list[str] = []
    real = users_module.check_password_hash

    def counting(password_hash: str, password: str) -> bool:
        calls.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(users_module, "check_password_hash", counting)
    return calls


def test_the_api_checks_a_hash_once_per_credential_and_always_refuses_a_wrong_one(
    checks: list[str],
) -> None:
    store = DeadLetterStore(redis.Redis(host="127.0.0.1", port=1))  # never connects here
    client = create_console(store, user(), "k" * 40, Celery("unit")).test_client()

    assert client.get("/metrics", auth=("viewer", PASSWORD)).status_code == 200
    assert len(checks) == 1
    for _ in range(3):
        assert client.get("/metrics", auth=("viewer", PASSWORD)).status_code == 200
    assert len(checks) == 1  # served from the cache

    for wrong in (OTHER, PASSWORD + "x", ""):
        assert client.get("/metrics", auth=("viewer", wrong)).status_code == 401, wrong
    assert client.get("/metrics", auth=("nobody", PASSWORD)).status_code == 401
    assert len(checks) == 5  # every failure checked a hash (the unknown user the dummy)
    for _ in range(2):  # and failures are not remembered
        assert client.get("/metrics", auth=("viewer", OTHER)).status_code == 401
    assert len(checks) == 7

    # Each console has its own cache.
    other = create_console(store, user(), "k" * 40, Celery("unit")).test_client()
    assert other.get("/metrics", auth=("viewer", PASSWORD)).status_code == 200
    assert len(checks) == 8


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl(checks: list[str]) -> None:
    clock = Clock()
    cache = CredentialCache(b"s" * 32, ttl=60.0, clock=clock)
    users = user()
    assert cache.authenticate(users, "viewer", PASSWORD) == users["viewer"]
    clock.now += 59.0
    assert cache.authenticate(users, "viewer", PASSWORD) == users["viewer"]
    assert len(checks) == 1
    clock.now += 1.0  # 60 s after the check: checked again
    assert cache.authenticate(users, "viewer", PASSWORD) == users["viewer"]
    assert len(checks) == 2
    clock.now += 30.0
    assert cache.authenticate(users, "viewer", PASSWORD) == users["viewer"]
    assert len(checks) == 2


def test_a_changed_hash_or_a_removed_user_invalidates(checks: list[str]) -> None:
    cache = CredentialCache(b"s" * 32)
    before = user()
    assert cache.authenticate(before, "viewer", PASSWORD) is not None
    changed = user(OTHER)  # the users file now holds another password's hash
    assert cache.authenticate(changed, "viewer", PASSWORD) is None
    assert checks == [before["viewer"].password_hash, changed["viewer"].password_hash]
    assert cache.authenticate(changed, "viewer", OTHER) == changed["viewer"]
    assert cache.authenticate({}, "viewer", OTHER) is None  # gone from the file
    assert len(checks) == 4


def test_the_cache_is_bounded_and_holds_no_password(checks: list[str]) -> None:
    cache = CredentialCache(b"s" * 32, max_entries=2)
    users = {name: User(name, generate_password_hash(f"{name}-password", "pbkdf2:sha256:1000"),
                        "admin") for name in ("a", "b", "c")}  # fmt: skip
    for name in ("a", "b", "c"):
        assert cache.authenticate(users, name, f"{name}-password") is not None
    assert len(cache) == 2
    held: Any = vars(cache)["_verified"]
    assert all(len(key) == 32 and b"password" not in key for key in held)
    assert cache.authenticate(users, "a", "a-password") is not None  # evicted: checked again
    assert cache.authenticate(users, "c", "c-password") is not None  # still held
    assert len(checks) == 4
