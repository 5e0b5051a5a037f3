"""A short-lived, bounded in-memory cache of verified HTTP Basic credentials.

Checking a Werkzeug scrypt hash costs tens of milliseconds and 32 MiB; an API client polling
every second would pay that on every request. A successful check is remembered for ``ttl``
seconds under an HMAC-SHA256 of the user name and password keyed with the console's secret key
(never the password itself), together with the password hash it was checked against: a user
whose hash changed, or who is gone, is checked again. Failures are never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from worker_app.web.users import User, authenticate

DEFAULT_TTL = 60.0
DEFAULT_MAX_ENTRIES = 256


class CredentialCache:
    """Verified (name, password) pairs of one console, for ``ttl`` seconds, at most
    ``max_entries`` of them (the oldest go first)."""

    def __init__(
        self,
        secret_key: bytes | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret_key if secret_key is not None else secrets.token_bytes(32)
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._verified)

    def _key(self, name: str, password: str) -> bytes:
        raw_name = name.encode("utf-8", "surrogatepass")
        message = (
            len(raw_name).to_bytes(4, "big") + raw_name + password.encode("utf-8", "surrogatepass")
        )
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def authenticate(self, users: dict[str, User], name: str, password: str) -> User | None:
        """Like ``users.authenticate``, skipping the hash check for a pair verified less than
        ``ttl`` seconds ago against the user's current hash."""
        key = self._key(name, password)
        user = users.get(name)
        now = self._clock()
        with self._lock:
            cached = self._verified.get(key)
            if cached is not None:
                password_hash, expires = cached
                if user is not None and password_hash == user.password_hash and now < expires:
                    return user
                del self._verified[key]
        verified = authenticate(users, name, password)
        if verified is not None:
            with self._lock:
                self._verified[key] = (verified.password_hash, now + self._ttl)
                self._verified.move_to_end(key)
                while len(self._verified) > self._max_entries:
                    self._verified.popitem(last=False)
        return verified
