"""``worker_app.beat_scheduler``: RedBeat's Redis, keys and lock as ``configure`` sets them (the
failover itself, with real Beats on a real Redis: tests/integration/test_beat_failover.py)."""

from __future__ import annotations

import pytest
from celery import Celery

from worker_app import configure
from worker_app.beat_scheduler import (
    BeatConfigError,
    lock_key_of,
    schedule_key_of,
    takeover_bound,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "WORKER_APP_POOLS_FILE",
        "WORKER_APP_REDIS_URL",
        "WORKER_APP_KEY_PREFIX",
        "WORKER_APP_SENTINEL_MASTER",
        "WORKER_APP_SENTINEL_USERNAME",
        "WORKER_APP_SENTINEL_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)


def user_app(**conf: object) -> Celery:
    app = Celery("proj", set_as_current=False)
    app.conf.update(conf)
    return app


def test_behind_sentinel_redbeat_follows_the_master_through_the_sentinels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_APP_SENTINEL_MASTER", "celery")
    monkeypatch.setenv("WORKER_APP_SENTINEL_USERNAME", "client")
    monkeypatch.setenv("WORKER_APP_SENTINEL_PASSWORD", "s3")
    url = "sentinel://celery:pw@10.0.0.1:26379/2;sentinel://celery:pw@10.0.0.2:26379/2"
    conf = configure(user_app(broker_url=url)).conf
    assert conf.redbeat_redis_url == "redis-sentinel://"
    options = conf.redbeat_redis_options
    assert options["sentinels"] == [["10.0.0.1", 26379], ["10.0.0.2", 26379]]
    assert (options["service_name"], options["db"]) == ("celery", 2)
    assert (options["username"], options["password"]) == ("celery", "pw")
    kwargs = dict(options["sentinel_kwargs"])
    assert kwargs.pop("retry").get_retries() == 0
    assert kwargs == {
        "socket_timeout": 10,
        "username": "client",
        "password": "s3",
    }


def test_redbeat_uses_the_state_redis_the_key_prefix_and_a_bounded_lock() -> None:
    conf = configure(user_app(broker_url="redis://10.0.0.9:6379/3")).conf
    assert conf.redbeat_redis_url == "redis://10.0.0.9:6379/3"  # the state Redis = the broker's
    assert conf.redbeat_key_prefix == "worker_app:redbeat:"
    assert conf.redbeat_redis_options == {}  # never the broker's transport options
    assert conf.beat_max_loop_interval == 5
    assert conf.redbeat_lock_timeout == 25
    assert lock_key_of(conf) == "worker_app:redbeat::lock"
    assert schedule_key_of(conf) == "worker_app:redbeat::schedule"
    assert takeover_bound(conf) == 30


def test_redbeat_follows_worker_app_redis_url_and_the_global_keyprefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_APP_REDIS_URL", "redis://10.0.0.7:6379/2")
    app = user_app(broker_url="redis://10.0.0.9:6379/3")
    app.conf.broker_transport_options = {"global_keyprefix": "tenant1:"}
    conf = configure(app).conf
    assert conf.redbeat_redis_url == "redis://10.0.0.7:6379/2"
    assert conf.redbeat_key_prefix == "tenant1:worker_app:redbeat:"
    assert lock_key_of(conf) == "tenant1:worker_app:redbeat::lock"


def test_the_users_beat_settings_stay_and_set_the_bound() -> None:
    conf = configure(
        user_app(
            beat_max_loop_interval=10,
            redbeat_redis_url="redis-sentinel://10.0.0.5:26379/0",
            redbeat_redis_options={"sentinels": [("10.0.0.5", 26379)], "service_name": "m"},
            redbeat_key_prefix="mine:",
            redbeat_lock_key="beat-lock",
        )
    ).conf
    assert conf.redbeat_redis_url == "redis-sentinel://10.0.0.5:26379/0"
    assert conf.redbeat_redis_options["service_name"] == "m"
    assert lock_key_of(conf) == "mine:beat-lock"  # RedBeat's rule: prefixed
    assert conf.redbeat_lock_timeout == 50  # 5 x the user's max interval
    assert takeover_bound(conf) == 60


def test_a_lock_shorter_than_two_ticks_is_refused() -> None:
    with pytest.raises(BeatConfigError, match=r"redbeat_lock_timeout=8 .*beat_max_loop_interval=5"):
        configure(user_app(redbeat_lock_timeout=8))


def test_lock_key_of_an_app_configure_never_saw_is_redbeats_default() -> None:
    assert lock_key_of({}) == "redbeat::lock"
    assert schedule_key_of({}) == "redbeat::schedule"
