"""``worker-app demo``: publish a realistic mix of example tasks to all four queues."""

from __future__ import annotations

import uuid

import click


@click.command()
@click.option("--count", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Ordinary tasks per queue.")  # fmt: skip
def demo(count: int) -> None:
    """Publish ordinary tasks to every queue, tasks that retry and succeed, and tasks
    that die into the DLQ (retries exhausted, non-retryable, soft time limit).

    The workers must load worker_app.examples (WORKER_APP_TASK_MODULES)."""
    from worker_app import app  # noqa: PLC0415 - the app reads the environment

    run = uuid.uuid4().hex[:6]
    sent: dict[str, int] = {}

    def send(name: str, queue: str, *args: object) -> None:
        app.send_task(name, args=list(args), queue=queue)
        sent[f"{queue:<8} {name}"] = sent.get(f"{queue:<8} {name}", 0) + 1

    for i in range(count):
        send("examples.notify_user", "critical", i)
        send("examples.record", "high", f"{run}-high-{i}")
        send("examples.record", "default", f"{run}-default-{i}")
        send("examples.record", "low", f"{run}-low-{i}")
    for i in range(max(1, count // 5)):
        send("examples.flaky", "high", f"{run}-flaky-{i}", 2)
        send("examples.idempotent_charge", "default", f"order-{run}-{i}", 1999)
        send("examples.idempotent_charge", "default", f"order-{run}-{i}", 1999)
    send("examples.always_fails", "default", f"{run}-upstream-a")
    send("examples.always_fails", "default", f"{run}-upstream-b")
    send("examples.invalid_input", "high", f"{run}-bad-record")
    send("examples.slow", "low", f"{run}-report", 1.0)
    send("examples.slow", "low", f"{run}-too-slow", 5.0)
    for name_queue, n in sorted(sent.items()):
        click.echo(f"{n:>5}  {name_queue}")
    click.echo(
        f"published {sum(sent.values())} tasks (run {run}); expect 4 dead letters: 2 retries "
        "exhausted (examples.always_fails), 1 non-retryable (examples.invalid_input), "
        "1 soft time limit (examples.slow)"
    )
