"""What was published, and the audit of what became of each task afterwards."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from tests.chaos.tasks import EFFECT_REPEATS, EFFECTS, RUNS
from tests.support.broker import PRIORITY_SUFFIXES
from worker_app.broker_transport import ReliableChannel
from worker_app.dlq.store import DeadLetterStore
from worker_app.pools import load_catalogue

# The queues of the default pool catalogue (worker_app/pools.yml).
QUEUE_NAMES = load_catalogue().queue_names


@dataclass(frozen=True)
class Planned:
    """One task of the run and the fate it is given."""

    token: str
    task: str
    queue: str
    fail_times: int
    permanent: bool
    duplicate: bool  # published twice (idempotent tasks only): the guard must skip one

    @property
    def idempotent(self) -> bool:
        return self.task == "chaos.work_idempotent"


def plan(
    tasks: int, *, seed: int, transient: float, permanent: float, idempotent: float,
    duplicate: float, prefix: str = "t",
) -> list[Planned]:  # fmt: skip
    """``tasks`` tasks over the four queues with the given shares of fates."""
    rng = random.Random(seed)
    planned = []
    for n in range(tasks):
        roll = rng.random()
        is_permanent = roll < permanent
        fail_times = rng.choice((1, 2, 3)) if permanent <= roll < permanent + transient else 0
        is_idempotent = rng.random() < idempotent
        planned.append(
            Planned(
                token=f"{prefix}{n:06d}",
                task="chaos.work_idempotent" if is_idempotent else "chaos.work",
                queue=QUEUE_NAMES[n % len(QUEUE_NAMES)],
                fail_times=fail_times,
                permanent=is_permanent,
                duplicate=is_idempotent and not is_permanent and rng.random() < duplicate,
            )
        )
    return planned


@dataclass
class Audit:
    """Each planned task's fate, read from its side effects and the DLQ."""

    total: int
    effect_once: int = 0
    effect_repeated: int = 0  # non-idempotent tasks whose effect ran more than once
    extra_effects: int = 0  # the sum of those repeats
    dead_lettered_as_planned: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # an outcome the plan rules out
    idempotent_effect_repeats: int = 0  # re-runs that reached an already applied effect
    body_runs: int = 0
    fates: Counter[str] = field(default_factory=Counter)

    @property
    def accounted(self) -> int:
        return self.total - len(self.lost) - len(self.wrong)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.total,
            "accounted": self.accounted,
            "lost": len(self.lost),
            "lost_tokens": self.lost[:50],
            "wrong_outcomes": self.wrong[:50],
            "effect_applied_once": self.effect_once,
            "non_idempotent_with_duplicate_effect": self.effect_repeated,
            "duplicate_effects": self.extra_effects,
            "idempotent_effect_repeats_absorbed": self.idempotent_effect_repeats,
            "dead_lettered_as_planned": self.dead_lettered_as_planned,
            "body_runs": self.body_runs,
            "fates": dict(self.fates),
        }


def _int_hash(client: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(key).items()}


def _own_permanent_error(entry: Any, token: str) -> bool:
    return (
        entry.reason == "non_retryable"
        and (entry.exception_type or "").endswith("NonRetryableError")
        and token in (entry.exception_message or "")
    )


def audit(planned: list[Planned], client: redis.Redis, store: DeadLetterStore) -> Audit:
    """Account for every planned task (one token each; duplicates share the token)."""
    runs = _int_hash(client, RUNS)
    effects = _int_hash(client, EFFECTS)
    repeats = _int_hash(client, EFFECT_REPEATS)
    dead: dict[str, list[Any]] = {}
    for entry in store.iter_entries(newest_first=False):
        token = str(entry.args[0]) if entry.args else f"?{entry.id}"
        dead.setdefault(token, []).append(entry)
    result = Audit(total=len(planned))
    result.body_runs = sum(runs.values())
    result.idempotent_effect_repeats = sum(repeats.values())
    for task in planned:
        applied = effects.get(task.token, 0)
        entries = dead.pop(task.token, [])
        if task.permanent:
            result.fates["permanent"] += 1
            own = [e for e in entries if _own_permanent_error(e, task.token)]
            if applied or len(own) != len(entries):
                result.wrong.append(f"{task.token}: permanent, effects={applied}, dlq={entries}")
            elif own:
                result.dead_lettered_as_planned += 1
            else:
                result.lost.append(task.token)
            continue
        result.fates["transient" if task.fail_times else "ok"] += 1
        if entries:
            reasons = [(e.reason, e.exception_type) for e in entries]
            result.wrong.append(f"{task.token}: should succeed, dead-lettered {reasons}")
        elif applied == 0:
            result.lost.append(task.token)
        elif applied == 1:
            result.effect_once += 1
        elif task.idempotent:
            result.wrong.append(f"{task.token}: idempotent effect applied {applied} times")
        else:
            result.effect_repeated += 1
            result.extra_effects += applied - 1
    for token, entries in dead.items():
        result.wrong.append(f"unplanned dead letter {token}: {[e.reason for e in entries]}")
    return result


def broker_idle(client: redis.Redis) -> bool:
    """No message waits in any queue (any priority), none is unacknowledged, and no
    consumer holds one in flight."""
    keys = [f"{q}{suffix}" for q in QUEUE_NAMES for suffix in PRIORITY_SUFFIXES]
    keys += [k.decode() for k in client.scan_iter(f"{ReliableChannel.inflight_registry_key}:*")]
    pipe = client.pipeline()
    for key in keys:
        pipe.llen(key)
    pipe.hlen("unacked")
    return not any(pipe.execute())


def queued(client: redis.Redis) -> int:
    """Messages waiting in the four queues (not counting unacknowledged ones)."""
    pipe = client.pipeline()
    for queue in QUEUE_NAMES:
        pipe.llen(queue)
    return int(sum(pipe.execute()))
