"""Redis Sentinel on the client side: kombu's ``sentinel://`` URLs, read for worker_app's own
clients (redis-py's ``Sentinel(...).master_for(...)``, which follows a failover).

A broker URL names every Sentinel, separated by ``;`` (kombu's format)::

    sentinel://celery:PASSWORD@host1:26379/0;sentinel://celery:PASSWORD@host2:26379/0

The user, password and database of the URLs are those of the Redis data nodes; the
Sentinels' own credentials and the master (service) name come from the settings
(``WORKER_APP_SENTINEL_*``) or the app's ``broker_transport_options``. With
``WORKER_APP_SENTINEL_TLS`` the Sentinels and the data nodes are reached over TLS, verified as
``WORKER_APP_REDIS_TLS_*`` say (``worker_app.tls``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.backoff import NoBackoff
from redis.retry import Retry

from worker_app.tls import TLSConfig

SCHEME = "sentinel"


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` is a (list of) ``sentinel://`` URL(s)."""
    return url.strip().lower().startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class SentinelURL:
    """What a ``sentinel://`` URL list says: the Sentinels, and how to reach the data nodes."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Read kombu's ``sentinel://...;sentinel://...`` (the first URL gives the data nodes'
        user, password and database, as in kombu)."""
        sentinels: list[tuple[str, int]] = []
        first = None
        for part in (p.strip() for p in url.split(";")):
            if not part:
                continue
            parsed = urlsplit(part)
            if parsed.scheme.lower() != SCHEME:
                raise ValueError(f"not a sentinel:// URL: {_redacted(part)}")
            sentinels.append((parsed.hostname or "127.0.0.1", parsed.port or 26379))
            first = first or parsed
        if first is None:
            raise ValueError("empty sentinel:// URL")
        path = first.path.strip("/")
        return cls(
            sentinels=tuple(sentinels),
            db=int(path) if path.isdigit() else 0,
            username=unquote(first.username) if first.username else None,
            password=unquote(first.password) if first.password else None,
        )


@dataclass(frozen=True)
class SentinelConfig:
    """The master (service) name, the Sentinels' own credentials, and the TLS of the
    connections to the Sentinels and to the data nodes they name (None: plain TCP)."""

    master: str
    username: str | None = None
    password: str | None = None
    tls: TLSConfig | None = None

    def data_kwargs(self) -> dict[str, Any]:
        """Connection arguments for the data nodes beyond the URL's: TLS, if on (redis-py's
        ``ssl`` picks its Sentinel-managed TLS connection)."""
        return {"ssl": True, **self.tls.redis_kwargs()} if self.tls is not None else {}

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection arguments for the Sentinels themselves (kombu's ``sentinel_kwargs``)."""
        kwargs: dict[str, Any] = self.data_kwargs()
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def client_kwargs(self) -> SentinelKwargs:
        """``sentinel_kwargs`` for a client of the Sentinels: the credentials, and one
        connection attempt per Sentinel (``one_attempt``)."""
        return SentinelKwargs({"retry": one_attempt(), **self.sentinel_kwargs()})


class SentinelKwargs(Mapping[str, Any]):
    """The Sentinels' connection arguments, as kept in the broker's transport options: a
    read-only mapping that kombu and redis-py unpack like a dict, but that serializes (as the
    remote control's ``stats`` reply, which carries the transport options, does) with the
    password masked and the retry policy described, not as the ``Retry`` object JSON cannot
    encode. A plain dict there left every worker on Sentinel without an answer to ``stats``."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = dict(kwargs)

    def __getitem__(self, key: str) -> Any:
        return self._kwargs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kwargs)

    def __len__(self) -> int:
        return len(self._kwargs)

    def __repr__(self) -> str:
        return f"SentinelKwargs({self.__json__()!r})"

    def __json__(self) -> dict[str, Any]:
        """What kombu's JSON encoder writes: no secret, nothing it cannot encode."""
        shown: dict[str, Any] = {}
        for key, value in self._kwargs.items():
            if key == "password":
                shown[key] = "********"
            elif isinstance(value, Retry):
                shown[key] = f"{value.get_retries()} retries"
            elif isinstance(value, (str, int, float, bool)) or value is None:
                shown[key] = value
            else:
                shown[key] = type(value).__name__
        return shown


def one_attempt() -> Retry:
    """The retry policy of a connection to a Sentinel: none. A client asks the Sentinels in
    turn, so the next Sentinel is the retry. redis-py's default (10 retries with backoff, since
    redis-py 6) made every master lookup spend about 3.5 s on a stopped Sentinel (refused
    connections) before asking the next one, and a lost host 10 connect timeouts; the workers
    look the master up again on every reconnect during a failover."""
    return Retry(NoBackoff(), 0)


def master_client(url: str, config: SentinelConfig, **connection: Any) -> Any:
    """A redis-py client of the current master of ``config.master``, found through the
    Sentinels of ``url``; it asks them again when the master fails or is demoted."""
    from redis.sentinel import Sentinel  # noqa: PLC0415 - only sentinel users need it

    parsed = SentinelURL.parse(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels),
        sentinel_kwargs={**connection_timeouts(connection), **config.client_kwargs()},
    )
    data: dict[str, Any] = {"db": parsed.db, **config.data_kwargs(), **connection}
    if parsed.username:
        data["username"] = parsed.username
    if parsed.password:
        data["password"] = parsed.password
    return sentinel.master_for(config.master, **data)  # type: ignore[no-untyped-call]


def connection_timeouts(connection: dict[str, Any]) -> dict[str, Any]:
    """The socket timeouts of ``connection``, for the Sentinel connections too."""
    return {
        key: connection[key]
        for key in ("socket_timeout", "socket_connect_timeout")
        if key in connection
    }


def _redacted(url: str) -> str:
    parsed = urlsplit(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def redbeat_options(url: str, config: SentinelConfig) -> tuple[str, dict[str, Any]]:
    """``(redbeat_redis_url, redbeat_redis_options)`` that make RedBeat (celery-redbeat) reach
    the current master of ``config.master`` through the Sentinels of ``url``."""
    parsed = SentinelURL.parse(url)
    options: dict[str, Any] = {
        "sentinels": [list(address) for address in parsed.sentinels],
        "service_name": config.master,
        "db": parsed.db,
        "socket_timeout": 10,
    }
    if parsed.username:
        options["username"] = parsed.username
    if parsed.password:
        options["password"] = parsed.password
    options["sentinel_kwargs"] = SentinelKwargs({"socket_timeout": 10, **config.client_kwargs()})
    return "redis-sentinel://", options
