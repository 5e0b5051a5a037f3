"""``worker-app demo``: publish a realistic mix of example tasks to every queue."""

from __future__ import annotations

import uuid

import click

from worker_app.cli.app_option import app_option, cli_app


@click.command()
@app_option
@click.option("--count", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Ordinary tasks per queue.")  # fmt: skip
def demo(count: int) -> None:
    """Publish ordinary tasks to every queue of the pool catalogue, tasks that retry and
    succeed, and tasks that die into the DLQ (retries exhausted, non-retryable, soft time
    limit). Tasks other than the ordinary ones go where their class routes them.

    The workers must load worker_app.examples (WORKER_APP_TASK_MODULES)."""
    app = cli_app()

    run = uuid.uuid4().hex[:6]
    sent: dict[str, int] = {}

    def send(name: str, *args: object, queue: str | None = None) -> None:
        task = app.tasks.get(name)
        options = {"queue": queue} if queue else {}
        if task is not None:
            task.apply_async(args=list(args), **options)
        else:
            app.send_task(name, args=list(args), **options)
        label = f"{queue or 'routed':<8} {name}"
        sent[label] = sent.get(label, 0) + 1

    app.loader.import_default_modules()
    for i in range(count):
        send("examples.notify_user", i)
        for queue in app.worker_app_catalogue.queue_names:
            send("examples.record", f"{run}-{queue}-{i}", queue=queue)
    for i in range(max(1, count // 5)):
        send("examples.flaky", f"{run}-flaky-{i}", 2)
        send("examples.idempotent_charge", f"order-{run}-{i}", 1999)
        send("examples.idempotent_charge", f"order-{run}-{i}", 1999)
    send("examples.always_fails", f"{run}-upstream-a")
    send("examples.always_fails", f"{run}-upstream-b")
    send("examples.invalid_input", f"{run}-bad-record")
    send("examples.slow", f"{run}-report", 1.0)
    send("examples.slow", f"{run}-too-slow", 5.0)
    for name_queue, n in sorted(sent.items()):
        click.echo(f"{n:>5}  {name_queue}")
    click.echo(
        f"published {sum(sent.values())} tasks (run {run}); expect 4 dead letters: 2 retries "
        "exhausted (examples.always_fails), 1 non-retryable (examples.invalid_input), "
        "1 soft time limit (examples.slow)"
    )
