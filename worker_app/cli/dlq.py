"""``worker-app dlq``: inspect, replay and remove dead-lettered tasks."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime

import click

from worker_app.broker_transport import PublishNotReplicatedError
from worker_app.cli.app_option import app_option, cli_app, cli_settings
from worker_app.dlq import query
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.replay import BATCH, NotReplayableError, oversized, replay_batch
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError
from worker_app.dlq.writer import store_for
from worker_app.message_size import SETTING, MessageTooLargeError


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` -> seconds (worker_app.dlq.query's rule)."""
    try:
        return query.parse_duration(text)
    except query.FilterError as error:
        raise click.BadParameter(str(error)) from None


def _store() -> DeadLetterStore:
    return store_for(cli_settings())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int) -> str:
    text = (text or "-").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _load_all(store: DeadLetterStore, ids: tuple[str, ...]) -> list[DeadLetter]:
    """Every entry of ``ids``, or a clean error naming the unknown ones (nothing done)."""
    entries, unknown = [], []
    for entry_id in ids:
        try:
            entries.append(store.get(entry_id))
        except UnknownEntryError:
            unknown.append(entry_id)
    if unknown:
        raise click.ClickException(
            f"no dead-letter entry with id: {', '.join(unknown)} (nothing changed)"
        )
    return entries


@click.group()
@app_option
def dlq() -> None:
    """The dead-letter queue: tasks that failed for good, kept for inspection and replay."""


@dlq.command("list")
@click.option("--queue", help="Only entries from this queue.")
@click.option("--task", "task_name", help="Only entries of this task name.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array).")
def list_entries(queue: str | None, task_name: str | None, limit: int, as_json: bool) -> None:
    """List entries, newest first."""
    entries = []
    for entry in _store().iter_entries(queue=queue, task=task_name):
        entries.append(entry)
        if len(entries) >= limit:
            break
    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=2, default=str))
        return
    if not entries:
        click.echo("no dead-letter entries")
        return
    click.echo(
        f"{'ID':<36}  {'FAILED AT (UTC)':<19}  {'QUEUE':<8}  {'TASK':<28}  {'REASON':<17}  ERROR"
    )
    for e in entries:
        click.echo(
            f"{_short(e.id, 36):<36}  {_when(e.failed_at):<19}  {_short(e.queue, 8):<8}  "
            f"{_short(e.task_name, 28):<28}  {e.reason:<17}  "
            f"{_short(f'{e.exception_type}: {e.exception_message}', 60)}"
        )


@dlq.command()
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(entry_id: str, as_json: bool) -> None:
    """Show one entry in full."""
    (entry,) = _load_all(_store(), (entry_id,))
    if as_json:
        click.echo(json.dumps(asdict(entry), indent=2, default=str))
        return
    for key, value in asdict(entry).items():
        if key == "traceback":
            continue
        shown = value
        if key in ("failed_at", "first_published_at"):
            shown = f"{_when(value)} UTC" if value else "-"
        click.echo(f"{key + ':':<20} {shown}")
    if entry.traceback:
        click.echo("traceback:\n" + entry.traceback.rstrip())


@dlq.command("replay")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every (matching) entry.")
@click.option("--queue", help="With --all: only entries from this queue.")
@click.option("--task", "task_name", help="With --all: only entries of this task name.")
def replay_cmd(
    entry_ids: tuple[str, ...], replay_all: bool, queue: str | None, task_name: str | None
) -> None:
    """Publish entries again to their original queue with their original arguments.

    A replay starts with a fresh retry budget; an entry is removed only after its
    publish succeeded."""
    if bool(entry_ids) == replay_all:
        raise click.UsageError("give entry ids or --all (not both)")
    if (queue or task_name) and not replay_all:
        raise click.UsageError("--queue and --task filter --all")
    app = cli_app()

    store = _store()
    if replay_all:
        entries = [e for e in store.iter_entries(queue=queue, task=task_name, newest_first=False)]
        entries = [e for e in entries if e.replayable]
    else:
        entries = _load_all(store, entry_ids)
        refused = [e.id for e in entries if not e.replayable]
        if refused:
            raise click.ClickException(
                f"not replayable (no task to publish): {', '.join(refused)} (nothing changed)"
            )
    limit, too_large = oversized(app, entries)
    if too_large:
        listed = ", ".join(f"{entry_id} ({size} bytes)" for entry_id, size in too_large)
        raise click.ClickException(
            f"too large to publish under {SETTING}={limit}: {listed} (nothing changed); "
            f"to replay them, run this command with {SETTING} set above their size"
        )
    started = time.monotonic()
    replayed = kept = 0
    for first in range(0, len(entries), BATCH):
        batch = entries[first : first + BATCH]
        try:
            statuses = replay_batch(store, app, batch)
        except (NotReplayableError, MessageTooLargeError) as exc:
            raise click.ClickException(
                f"{exc} ({replayed} replayed before; the rest is in the DLQ)"
            ) from None
        except PublishNotReplicatedError as exc:
            raise click.ClickException(
                f"{exc}; the {len(batch)} entries from {batch[0].id} stay in the DLQ (their "
                f"tasks were published to the master and will normally run: check before "
                f"replaying them again); {replayed} replayed before"
            ) from None
        except Exception as exc:  # the broker went away: say how far it got
            raise click.ClickException(
                f"{type(exc).__name__}: {exc}; {replayed} replayed, the other "
                f"{len(entries) - replayed} stay in the DLQ (some tasks of the batch from "
                f"{batch[0].id} may have been published: they would run twice if replayed again)"
            ) from None
        replayed += len(batch)
        kept += sum(status != 1 for status in statuses)
        click.echo(  # one write per batch
            "\n".join(f"replayed {e.id} -> {e.queue} ({e.task_name})" for e in batch)
        )
    elapsed = time.monotonic() - started
    click.echo(
        f"{replayed} replayed in {elapsed:.2f}s"
        + (f"; {kept} kept (died again meanwhile)" if kept else "")
    )


@dlq.command()
@click.argument("entry_ids", nargs=-1, required=True)
def delete(entry_ids: tuple[str, ...]) -> None:
    """Delete entries (all ids must exist, or nothing is deleted)."""
    store = _store()
    entries = _load_all(store, entry_ids)
    for entry in entries:
        store.remove(entry.id)
        click.echo(f"deleted {entry.id}")


@dlq.command()
@click.option("--older-than", "older_than", help="Only entries that failed longer ago (e.g. 7d).")
@click.option("--yes", is_flag=True, help="Do not ask (required without a terminal).")
def purge(older_than: str | None, yes: bool) -> None:
    """Delete all entries, or those older than a duration."""
    seconds = parse_duration(older_than) if older_than else None
    store = _store()
    what = f"entries older than {older_than}" if older_than else f"all {len(store)} entries"
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to purge {what} without --yes")
        click.confirm(f"Purge {what}?", abort=True)
    removed = store.purge(older_than=seconds)
    click.echo(f"purged {removed} entries")


@dlq.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(as_json: bool) -> None:
    """Counts by queue and task, and the oldest entry's age."""
    result = _store().stats()
    age = time.time() - result.oldest_failed_at if result.oldest_failed_at else None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "total": result.total,
                    "by_queue": result.by_queue(),
                    "by_queue_and_task": [
                        {"queue": q, "task": t, "count": n}
                        for (q, t), n in sorted(result.by_queue_and_task.items())
                    ],
                    "oldest_failed_at": result.oldest_failed_at,
                    "oldest_age_seconds": age,
                },
                indent=2,
            )
        )
        return
    click.echo(f"total: {result.total}")
    if age is not None:
        click.echo(f"oldest: {_when(result.oldest_failed_at)} UTC ({age / 3600:.1f} h ago)")
    if result.by_queue_and_task:
        click.echo(f"{'QUEUE':<10} {'TASK':<40} {'COUNT':>6}")
        for (queue, task), count in sorted(result.by_queue_and_task.items()):
            click.echo(f"{queue or '-':<10} {task or '-':<40} {count:>6}")
