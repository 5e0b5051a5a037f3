"""Shared fixtures: a real redis-server per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free 127.0.0.1 port, stopped after the module."""
    server = start_redis(Path(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()
