"""The short chaos run and the Redis outage, inside `make test` (`make chaos` runs the full one).

Real redis-server (AOF on), the four pools under a real supervisord, SIGKILLs at random, a
Redis restart (on plain TCP, and once with Redis on TLS only), a 30 s outage, and a Sentinel
failover (a primary, two replicas, three Sentinels; the primary SIGKILLed mid-stream): every
task is accounted for afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chaos.failover import run_failover
from tests.chaos.run import chaos_failures, failover_failures, outage_failures
from tests.chaos.scenario import ChaosConfig, run_chaos, run_outage

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
GRACE = 10  # WORKER_APP_CONSUMER_GRACE of the short runs (its minimum)


@pytest.mark.parametrize(
    ("scheme", "tasks"),
    [("redis", 2000), ("rediss", 1000)],
    ids=["redis", "rediss-tls-only"],
)
def test_nothing_is_lost_under_sigkills_and_a_redis_restart(
    tmp_path: Path, scheme: str, tasks: int
) -> None:
    """The no-loss transport under SIGKILLs and a Redis restart, on plain TCP and once on TLS
    only (``rediss://``, client certificates required): the same guarantees."""
    config = ChaosConfig(
        tasks=tasks, kill_every=(1.0, 3.0), consumer_grace=GRACE, tls=scheme == "rediss"
    )
    result: dict[str, Any] = run_chaos(tmp_path, config)
    audit = result["audit"]
    print({k: v for k, v in result.items() if k not in ("timeline", "kill_log")})
    assert result["broker_url_scheme"] == scheme
    assert chaos_failures(result) == []
    assert audit["lost"] == 0 and audit["wrong_outcomes"] == []
    assert audit["accounted"] == tasks
    # The run did what it says: processes died of SIGKILL, Redis came back with its data.
    assert result["kills"]["total"] >= 3
    assert len(result["redis"]) == 1
    assert audit["dead_lettered_as_planned"] == audit["fates"]["permanent"] > 0
    assert audit["effect_applied_once"] + audit["non_idempotent_with_duplicate_effect"] == (
        audit["fates"]["ok"] + audit["fates"]["transient"]
    )
    # What killed main processes held was back within the grace period and a sweep, with
    # the one-hour visibility timeout (a heartbeat and a sweep every <= 5 s, and a margin).
    assert result["consumers_swept_dead"] <= result["consumers_of_killed_mains"]
    recovered = result["recovery"]
    assert recovered["still_held_at_end"] == 0
    if recovered["messages_held"]:
        assert recovered["per_message_s"]["max"] <= GRACE + 15, recovered


def test_workers_ride_out_a_30s_redis_outage_and_drain_the_backlog(tmp_path: Path) -> None:
    result = run_outage(tmp_path, ChaosConfig(consumer_grace=GRACE), tasks=2000, outage=30.0)
    print(result)
    assert result["backlog_at_outage"] > 0, "the outage must hit a backlog"
    assert outage_failures(result) == []
    # The same main process per pool throughout: no crash loop, no restart by supervisord.
    assert all(len(pids) == 1 for pids in result["main_pids_seen"].values())
    assert result["audit"]["accounted"] == 2000
    assert result["first_progress_after_s"] is not None
    assert result["consumers_swept_dead"] == 0


def test_a_failover_of_a_primary_killed_mid_stream_loses_no_confirmed_task(tmp_path: Path) -> None:
    """Sentinel's failover under load: the primary's redis-server SIGKILLed mid-stream while
    every publish waits for a replica (`make chaos` also stops the primary's host: its Redis
    SIGTERMed and the Sentinel beside it gone)."""
    result = run_failover(tmp_path, ChaosConfig(consumer_grace=GRACE), how="kill", tasks=1000)
    print(result)
    assert failover_failures(result) == []
    assert result["audit"]["accounted"] == 1000
    failure = result["failure"]
    assert failure["accounted_before"] < 1000  # it failed mid-stream
    assert failure["promotion_s"] is not None
    assert failure["first_run_on_new_primary_s"] is not None
    assert failure["old_primary_back_as_replica"]
    assert all(len(pids) == 1 for pids in result["main_pids_seen"].values())
