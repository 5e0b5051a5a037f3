"""Backoff arithmetic, the default pool catalogue and the app's cross-field rules."""

import random

import pytest
from celery import Celery

from worker_app.backoff import backoff_ceiling, clamp_countdown, full_jitter
from worker_app.factory import check_task_time_limits, load_and_check
from worker_app.pools import UnknownPoolError, load_catalogue
from worker_app.settings import Settings, SettingsError
from worker_app.task_classes import CriticalTask, LongRunningTask, RetryableTask


def test_ceiling_doubles_then_caps() -> None:
    assert [backoff_ceiling(n, 2, 600) for n in range(6)] == [2, 4, 8, 16, 32, 64]
    assert backoff_ceiling(20, 2, 600) == 600
    assert backoff_ceiling(10_000, 2, 600) == 600  # no overflow


def test_full_jitter_stays_within_the_ceiling_and_spreads() -> None:
    rng = random.Random(7)
    draws = [full_jitter(3, 1.0, 600, rng) for _ in range(2000)]
    assert all(0 <= d <= 8 for d in draws)
    # Spread over the whole range, not clustered at the top (that is the point).
    assert min(draws) < 0.5
    assert max(draws) > 7.5
    assert 3.5 < sum(draws) / len(draws) < 4.5


def test_negative_retries_are_rejected() -> None:
    with pytest.raises(ValueError, match="retries"):
        backoff_ceiling(-1, 1, 10)


def test_clamp_countdown() -> None:
    assert clamp_countdown(None, 10) is None
    assert clamp_countdown(5000, 1800) == 1800
    assert clamp_countdown(-3, 1800) == 0
    assert clamp_countdown(2.5, 1800) == 2.5


def test_every_task_class_retries_below_the_visibility_timeout() -> None:
    settings = Settings.from_env({})
    for cls in (RetryableTask, CriticalTask, LongRunningTask):
        assert min(cls.backoff_max, settings.max_countdown) < settings.visibility_timeout
    assert LongRunningTask.time_limit < settings.visibility_timeout


def test_the_default_catalogue_has_the_four_pools_one_queue_each() -> None:
    catalogue = load_catalogue()
    assert catalogue.names == ("critical", "high", "default", "low")
    assert catalogue.queue_names == ("critical", "high", "default", "low")
    assert (catalogue.default_queue, catalogue.maintenance_queue) == ("default", "low")
    for pool in catalogue.pools:
        assert pool.soft_time_limit < pool.time_limit
        assert pool.prefetch_multiplier == 1


def test_pool_argv_carries_its_limits_and_name() -> None:
    argv = load_catalogue().pool("low").worker_argv(concurrency=3)
    assert argv[argv.index("--queues") + 1] == "low"
    assert argv[argv.index("--concurrency") + 1] == "3"
    assert argv[argv.index("--time-limit") + 1] == "1860"
    assert argv[argv.index("--hostname") + 1] == "low@%h"


def test_unknown_pool_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownPoolError) as excinfo:
        load_catalogue().pool("urgent")
    assert str(excinfo.value) == "unknown pool 'urgent'; valid pools: critical, high, default, low"


def test_max_time_limit_caps_every_pool() -> None:
    settings = Settings.from_env(
        {"WORKER_APP_MAX_TIME_LIMIT": "100", "WORKER_APP_VISIBILITY_TIMEOUT": "161"}
    )
    catalogue = load_and_check(settings)
    assert catalogue.visibility_timeout_shortfalls(161, 100) == []
    low = catalogue.pool("low").capped(settings.max_time_limit)
    assert (low.soft_time_limit, low.time_limit) == (90, 100)
    critical = catalogue.pool("critical").capped(settings.max_time_limit)
    assert critical == catalogue.pool("critical"), "a pool under the cap keeps its limits"
    assert catalogue.longest_time_limit(100) == 100
    short = catalogue.visibility_timeout_shortfalls(160, 100)
    assert any("pool 'low': time_limit 100s (capped by WORKER_APP_MAX_TIME_LIMIT=100)" in line
               for line in short), short  # fmt: skip


@pytest.mark.parametrize("raw", ["0", "9", "ten"])
def test_max_time_limit_must_be_a_sensible_integer(raw: str) -> None:
    with pytest.raises(SettingsError, match="WORKER_APP_MAX_TIME_LIMIT"):
        Settings.from_env({"WORKER_APP_MAX_TIME_LIMIT": raw})


def test_a_task_time_limit_above_the_cap_is_refused_by_name() -> None:
    settings = Settings.from_env(
        {"WORKER_APP_MAX_TIME_LIMIT": "100", "WORKER_APP_VISIBILITY_TIMEOUT": "161"}
    )
    app = Celery("t", set_as_current=False)

    @app.task(name="reports.monthly", time_limit=1800)  # type: ignore[untyped-decorator]
    def monthly() -> None: ...

    @app.task(name="mail.send", time_limit=60)  # type: ignore[untyped-decorator]
    def send() -> None: ...

    with pytest.raises(SettingsError, match=r"reports\.monthly \(1800s\)") as excinfo:
        check_task_time_limits(app, settings, load_catalogue())
    assert "mail.send" not in str(excinfo.value)
    check_task_time_limits(app, Settings.from_env({}), load_catalogue())  # 1860 s allowed
