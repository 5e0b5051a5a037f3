"""`make chaos`: the full chaos run, the Redis outage, the Sentinel failovers and the Beat
failover, with a report.

Prints what happened and the audit; writes JSON to chaos-results/. Exit status 1
when any task was lost or ended in a way its plan rules out, or when a worker
crash-looped through the outage or a failover.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.chaos.beat_failover import beat_failures, run_beat_failover
from tests.chaos.failover import FAILURES, fleet_problems, run_failover
from tests.chaos.scenario import ChaosConfig, run_chaos, run_outage

RESULTS = Path("chaos-results")


def chaos_failures(result: dict[str, Any]) -> list[str]:
    """Why a chaos run failed its promise (empty: every task accounted for)."""
    audit = result["audit"]
    problems = []
    if audit["lost"]:
        problems.append(f"{audit['lost']} tasks lost: {audit['lost_tokens'][:10]}")
    if audit["wrong_outcomes"]:
        problems.append(f"unexpected outcomes: {audit['wrong_outcomes'][:10]}")
    if not result["redis"]:
        problems.append("Redis was never restarted")
    if result["kills"]["total"] == 0:
        problems.append("no worker process was killed")
    return problems


def outage_failures(result: dict[str, Any]) -> list[str]:
    """Why the outage run failed (lost tasks, a worker restarted, never drained)."""
    problems = []
    if result["audit"]["lost"] or result["audit"]["wrong_outcomes"]:
        problems.append(f"tasks lost or wrong: {result['audit']['lost_tokens'][:10]} "
                        f"{result['audit']['wrong_outcomes'][:10]}")  # fmt: skip
    restarted = {pool: pids for pool, pids in result["main_pids_seen"].items() if len(pids) != 1}
    if restarted:
        problems.append(f"worker main processes changed (crash loop?): {restarted}")
    if result["states_during_outage"] != ["RUNNING"]:
        problems.append(f"supervisord saw states {result['states_during_outage']}")
    return problems


def failover_failures(result: dict[str, Any]) -> list[str]:
    """Why a failover run failed (a confirmed task lost, no promotion, a worker restarted)."""
    problems = fleet_problems(result)
    failure = result["failure"]
    if "failed_at_s" not in failure:
        problems.append("the primary never failed (the run ended first)")
    elif failure.get("first_run_on_new_primary_s") is None:
        problems.append("no task ran on the new primary")
    return problems


def _print_failover(result: dict[str, Any]) -> None:
    a, f = result["audit"], result["failure"]
    print(f"  failure                           {f['how']} at t={f.get('failed_at_s')} s "
          f"({f.get('accounted_before')} of {a['tasks']} accounted)")  # fmt: skip
    print(
        f"  Sentinel down-after / failover-timeout {f.get('down_after_ms')} / "
        f"{f.get('failover_timeout_ms')} ms"
    )
    print(f"  failure -> replica promoted       {f.get('promotion_s')} s")
    print(f"  failure -> first task run on it   {f.get('first_run_on_new_primary_s')} s")
    print(f"  publishes refused, published again {result['publish_retries']}")
    print(f"  main PIDs per pool (one = no restart) {result['main_pids_seen']}")
    print(f"  accounted / lost                  {a['accounted']}/{a['tasks']} / {a['lost']}")
    print(f"  duplicate effects (non-idempotent) {a['duplicate_effects']}")
    print(f"  task body runs in all             {a['body_runs']}")


def _print_beat(result: dict[str, Any]) -> None:
    b, a = result["beat"], result["audit"]
    print(f"  Beat lock timeout / max interval  {b['redbeat_lock_timeout']} / "
          f"{b['beat_max_loop_interval']} s (takeover bound {b['bound_s']} s)")  # fmt: skip
    print(f"  active Beat SIGKILLed at          t={b.get('killed_at_s')} s "
          f"({b.get('queued_at_kill')} tasks queued)")  # fmt: skip
    print(f"  kill -> the standby's first tick  {b.get('takeover_s')} s")
    print(f"  ticks published / of the standby  {b['ticks_published']} / {b['standby_ticks']}")
    print(f"  ticks published twice / run twice {b['ticks_published_twice']} / "
          f"{b['ticks_run_twice']}")  # fmt: skip
    print(f"  tick gaps median / max            {b['median_gap_s']} / {b['max_gap_s']} s")
    print(f"  accounted / lost                  {a['accounted']}/{a['tasks']} / {a['lost']}")


def _print_chaos(result: dict[str, Any]) -> None:
    a, k = result["audit"], result["kills"]
    rows = [
        ("tasks published (+ duplicate publishes)",
         f"{a['tasks']} (+{result['duplicate_publishes']})"),
        ("planned fates", ", ".join(f"{n} {f}" for f, n in sorted(a["fates"].items()))),
        ("worker processes SIGKILLed (main / pool child)",
         f"{k['total']} ({k['main']} / {k['child']}), median gap {k['median_gap_s']} s"),
        ("Redis restarts (unavailable)",
         ", ".join(f"{r['unavailable_s']} s at t={r['at']} s" for r in result["redis"]) or "none"),
        ("producer publish retries", str(result["publish_retries"])),
        ("messages of killed main processes returned by the transport's sweep",
         str(result["in_flight_returned"])),
        ("main-process kills holding messages: waited to be back, p50 / p99 / max (s)",
         _recovery(result["recovery"])),
        ("consumers the transport found dead (swept) / registered by killed main processes",
         f"{result['consumers_swept_dead']} / {result['consumers_of_killed_mains']}"),
        ("worker 'Unrecoverable error' crashes", str(result["worker_unrecoverable_errors"])),
        ("side effect applied exactly once", str(a["effect_applied_once"])),
        ("non-idempotent tasks with duplicate effects (extra effects)",
         f"{a['non_idempotent_with_duplicate_effect']} ({a['duplicate_effects']})"),
        ("idempotent re-runs absorbed by the keyed effect",
         str(a["idempotent_effect_repeats_absorbed"])),
        ("dead-lettered for their own permanent error", str(a["dead_lettered_as_planned"])),
        ("task body runs in all", str(a["body_runs"])),
        ("LOST", str(a["lost"])),
        ("unexpected outcomes", str(len(a["wrong_outcomes"]))),
        ("wall time (s)", str(result["duration_s"])),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _recovery(found: dict[str, Any]) -> str:
    kill, message = found["per_kill_s"], found["per_message_s"]
    return (f"{found['kills_holding_messages']} of {found['main_kills']}: {kill['p50']} / "
            f"{kill['p99']} / {kill['max']} ({found['messages_held']} messages: "
            f"{message['p50']} / {message['p99']} / {message['max']}; "
            f"{found['still_held_at_end']} never back)")  # fmt: skip


def _print_outage(result: dict[str, Any]) -> None:
    a = result["audit"]
    print(f"  backlog when Redis went away      {result['backlog_at_outage']} tasks")
    print(f"  Redis unreachable for             {result['outage_s']} s")
    print(f"  main PIDs per pool (one = no restart) {result['main_pids_seen']}")
    print(f"  supervisord states during outage  {result['states_during_outage']}")
    print(f"  first task done after Redis back  {result['first_progress_after_s']} s")
    print(f"  backlog drained after Redis back  {result['drained_after_s']} s")
    print(f"  consumers found dead (swept)      {result['consumers_swept_dead']}")
    print(f"  accounted / lost                  {a['accounted']}/{a['tasks']} / {a['lost']}")
    print(f"  duplicate effects (non-idempotent) {a['duplicate_effects']}")


def main() -> int:
    """Run the chaos and outage scenarios and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="publish rate (tasks/s)")
    parser.add_argument("--outage", type=float, default=30.0, help="Redis outage (s); 0: skip")
    parser.add_argument("--outage-tasks", type=int, default=3000)
    parser.add_argument(
        "--failover-tasks",
        type=int,
        default=5000,
        help="tasks of each Sentinel failover run (kill, host); 0: skip",
    )
    parser.add_argument(
        "--beat-tasks",
        type=int,
        default=4000,
        help="tasks published (the load) while the active Beat is SIGKILLed; 0: skip",
    )
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--consumer-grace",
        type=int,
        default=ChaosConfig.consumer_grace,
        help="WORKER_APP_CONSUMER_GRACE of the workers (s)",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        default=ChaosConfig.visibility_timeout,
        help="WORKER_APP_VISIBILITY_TIMEOUT of the workers (s)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="Redis on TLS only (rediss://, client certificates) for the chaos and outage runs",
    )
    args = parser.parse_args()
    config = ChaosConfig(tasks=args.tasks, publish_rate=args.rate, seed=args.seed,
                         consumer_grace=args.consumer_grace,
                         visibility_timeout=args.visibility_timeout, tls=args.tls)  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    failures = []
    with tempfile.TemporaryDirectory(prefix="chaos-") as raw:
        tmp = Path(raw)
        print(f"== chaos run ({time.strftime('%Y-%m-%d %H:%M:%S')})", flush=True)
        chaos = run_chaos(tmp / "chaos", config, log=lambda m: print(m, flush=True))
        (RESULTS / "chaos.json").write_text(json.dumps(chaos, indent=2, default=str))
        _print_chaos(chaos)
        failures += chaos_failures(chaos)
        if args.outage > 0:
            print("== Redis outage", flush=True)
            outage = run_outage(tmp / "outage", config, tasks=args.outage_tasks,
                                outage=args.outage, log=lambda m: print(m, flush=True))  # fmt: skip
            (RESULTS / "outage.json").write_text(json.dumps(outage, indent=2, default=str))
            _print_outage(outage)
            failures += outage_failures(outage)
        for how in FAILURES if args.failover_tasks > 0 else ():
            print(f"== Sentinel failover: {how}", flush=True)
            failover = run_failover(tmp / f"failover-{how}", config, how=how,
                                    tasks=args.failover_tasks,
                                    log=lambda m: print(m, flush=True))  # fmt: skip
            (RESULTS / f"failover-{how}.json").write_text(
                json.dumps(failover, indent=2, default=str)
            )
            _print_failover(failover)
            failures += failover_failures(failover)
        if args.beat_tasks > 0:
            print("== Beat failover: the active Beat's host lost", flush=True)
            beat = run_beat_failover(tmp / "beat", config, tasks=args.beat_tasks,
                                     log=lambda m: print(m, flush=True))  # fmt: skip
            (RESULTS / "beat-failover.json").write_text(json.dumps(beat, indent=2, default=str))
            _print_beat(beat)
            failures += beat_failures(beat)
    print(f"\nwritten: {RESULTS / 'chaos.json'}" + (f", {RESULTS / 'outage.json'}"
          if args.outage > 0 else "")
          + ("".join(f", {RESULTS / f'failover-{how}.json'}" for how in FAILURES)
             if args.failover_tasks > 0 else "")
          + (f", {RESULTS / 'beat-failover.json'}" if args.beat_tasks > 0 else ""))  # fmt: skip
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("RESULT: " + ("FAILED" if failures else "zero lost"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
