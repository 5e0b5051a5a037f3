"""The task base classes' policy steps (their order, how ``__call__`` runs them) and the
Celery retry options they refuse, on real Celery app objects; no broker is needed.

What the default steps do against a real Redis and real workers is proven by the
integration tests (retries and DLQ, breaker, shared limits, Redis failures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry

from worker_app.policies import (
    STEPS,
    Call,
    CircuitBreakerStep,
    DeadLetterStep,
    IdempotencyStep,
    RetryStep,
    SharedRateLimitStep,
    StateUnavailableStep,
    Step,
)
from worker_app.task_classes import (
    BaseTask,
    CriticalTask,
    LongRunningTask,
    NonRetryableError,
    RetryableTask,
)

Events = list[tuple[str, ...]]


def noop() -> None:
    """A task body that does nothing."""


class Recorder(Step):
    """Records each hook it sees; may raise from one hook to act as a deciding step."""

    def __init__(
        self, name: str, events: Events, raise_in: str = "", error: Exception | None = None
    ) -> None:
        self.name, self.events, self.raise_in, self.error = name, events, raise_in, error

    def _hook(self, hook: str, call: Call, *detail: str) -> None:
        self.events.append((self.name, hook, f"started={call.started}", *detail))
        if hook == self.raise_in and self.error is not None:
            raise self.error

    def before_run(self, call: Call) -> None:
        self._hook("before_run", call)

    def after_success(self, call: Call, result: Any) -> None:
        self._hook("after_success", call, repr(result))

    def after_failure(self, call: Call, exc: Exception) -> None:
        self._hook("after_failure", call, type(exc).__name__)

    def after_stop(self, call: Call, stop: Exception) -> None:
        self._hook("after_stop", call, type(stop).__name__)


@pytest.fixture
def app() -> Iterator[Celery]:
    celery = Celery("policies", broker="memory://", set_as_current=False)
    celery.conf.task_default_queue = "default"
    celery.finalize()
    yield celery
    celery.close()


def make_task(
    app: Celery, steps: tuple[Step, ...], body: Callable[..., Any], base: type = BaseTask
) -> Any:
    """A task on ``app`` with ``steps`` (``shared=False``: no other app gets it)."""

    def run(*args: Any) -> Any:
        return body(*args)

    return app.task(base=base, shared=False, name=f"t.{id(body)}", steps=steps)(run)


def run_as_worker(task: Any, *args: Any) -> Any:
    """Call the task as a worker does (a request that is neither direct nor eager)."""
    task.push_request(id="task-1", args=args, kwargs={}, called_directly=False, is_eager=False)
    try:
        return task(*args)
    finally:
        task.pop_request()


def recorders(events: Events, **raising: tuple[str, Exception]) -> tuple[Step, ...]:
    """Steps ``a``, ``b``, ``c``; ``b=("before_run", KeyError())`` makes ``b`` raise there."""
    return tuple(
        Recorder(name, events, *raising[name]) if name in raising else Recorder(name, events)
        for name in ("a", "b", "c")
    )


def test_the_default_steps_run_in_the_documented_order() -> None:
    assert [type(step) for step in BaseTask.steps] == [
        IdempotencyStep,
        StateUnavailableStep,
        CircuitBreakerStep,
        SharedRateLimitStep,
        RetryStep,
        DeadLetterStep,
    ]
    assert RetryableTask.steps is STEPS
    assert CriticalTask.steps is STEPS
    assert LongRunningTask.steps is STEPS


def test_success_runs_before_hooks_in_order_and_unwinds_after_the_run(app: Celery) -> None:
    events: Events = []
    ran: Events = []

    def body(x: int) -> int:
        ran.append(("run", str(x)))
        events.append(("run",))
        return x * 2

    task = make_task(app, recorders(events), body)
    assert run_as_worker(task, 21) == 42
    assert events == [
        ("a", "before_run", "started=False"),
        ("b", "before_run", "started=False"),
        ("c", "before_run", "started=False"),
        ("run",),
        ("c", "after_success", "started=True", "42"),
        ("b", "after_success", "started=True", "42"),
        ("a", "after_success", "started=True", "42"),
    ]


def test_a_failure_of_the_run_goes_through_every_step_in_order(app: Celery) -> None:
    events: Events = []

    def body() -> None:
        raise ValueError("boom")

    task = make_task(app, recorders(events), body)
    with pytest.raises(ValueError, match="boom"):
        run_as_worker(task)
    assert events[3:] == [
        ("a", "after_failure", "started=True", "ValueError"),
        ("b", "after_failure", "started=True", "ValueError"),
        ("c", "after_failure", "started=True", "ValueError"),
    ]


def test_a_failure_before_the_run_reaches_every_step_and_the_run_never_starts(
    app: Celery,
) -> None:
    events: Events = []
    task = make_task(
        app, recorders(events, b=("before_run", KeyError("state"))), lambda: events.append(("run",))
    )
    with pytest.raises(KeyError):
        run_as_worker(task)
    assert events == [
        ("a", "before_run", "started=False"),
        ("b", "before_run", "started=False"),
        ("a", "after_failure", "started=False", "KeyError"),
        ("b", "after_failure", "started=False", "KeyError"),
        ("c", "after_failure", "started=False", "KeyError"),
    ]


def test_the_first_step_that_decides_a_failure_ends_the_pass(app: Celery) -> None:
    events: Events = []

    def body() -> None:
        raise ValueError("boom")

    task = make_task(app, recorders(events, b=("after_failure", Ignore())), body)
    with pytest.raises(Ignore):
        run_as_worker(task)
    assert [event[:2] for event in events[3:]] == [("a", "after_failure"), ("b", "after_failure")]


@pytest.mark.parametrize("stop", [Retry("again"), Ignore(), Reject("no", requeue=True)])
def test_celerys_control_exceptions_only_stop_the_steps(app: Celery, stop: Exception) -> None:
    events: Events = []

    def body() -> None:
        raise stop

    task = make_task(app, recorders(events), body)
    with pytest.raises(type(stop)):
        run_as_worker(task)
    name = type(stop).__name__
    assert events[3:] == [
        ("a", "after_stop", "started=True", name),
        ("b", "after_stop", "started=True", name),
        ("c", "after_stop", "started=True", name),
    ]


def test_a_control_exception_from_a_step_stops_before_the_run(app: Celery) -> None:
    events: Events = []
    task = make_task(
        app, recorders(events, a=("before_run", Ignore())), lambda: events.append(("run",))
    )
    with pytest.raises(Ignore):
        run_as_worker(task)
    assert [event[:2] for event in events] == [
        ("a", "before_run"),
        ("a", "after_stop"),
        ("b", "after_stop"),
        ("c", "after_stop"),
    ]


def test_direct_and_eager_calls_skip_the_steps(app: Celery) -> None:
    events: Events = []
    task = make_task(app, recorders(events), lambda x: x + 1)
    assert task(1) == 2
    assert task.apply(args=(2,)).get() == 3
    assert events == []


def test_the_dead_letter_reason_of_a_final_failure(app: Celery) -> None:
    retryable = make_task(app, STEPS, lambda: None, base=RetryableTask)
    assert DeadLetterStep.reason(retryable, ConnectionError()) == "retries_exhausted"
    assert DeadLetterStep.reason(retryable, SoftTimeLimitExceeded()) == "time_limit"
    assert DeadLetterStep.reason(retryable, ValueError()) == "non_retryable"

    class RefusedError(NonRetryableError, ConnectionError):
        pass

    assert DeadLetterStep.reason(retryable, RefusedError()) == "non_retryable"


# -- refusals -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("autoretry_for", (ConnectionError,), "retry_on"),
        ("dont_autoretry_for", (KeyError,), "non_retryable"),
        ("retry_kwargs", {"max_retries": 3}, "max_retries"),
        ("retry_backoff", 2, "backoff_first"),
        ("retry_backoff_max", 60, "backoff_max"),
        ("retry_jitter", False, "backoff_first"),
    ],
)
@pytest.mark.parametrize("base", [BaseTask, RetryableTask, CriticalTask, LongRunningTask])
def test_celerys_autoretry_options_are_refused_where_the_task_is_defined(
    app: Celery, base: type, option: str, value: Any, named: str
) -> None:
    def fetch() -> None: ...

    with pytest.raises(TypeError, match=rf"'proj\.fetch' sets {option}: .*{named}"):
        app.task(base=base, shared=False, name="proj.fetch", **{option: value})(fetch)
    assert "proj.fetch" not in app.tasks


def test_autoretry_for_is_refused_when_a_lazy_task_is_registered() -> None:
    app = Celery("lazy", broker="memory://", set_as_current=False)

    def fetch() -> None: ...

    app.task(base=RetryableTask, shared=False, name="proj.fetch", autoretry_for=(OSError,))(fetch)
    with pytest.raises(TypeError, match="two retry mechanisms at once"):
        app.finalize()


def test_a_subclass_setting_a_celery_retry_option_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"sets retry_backoff: .*backoff_first"):

        class Slow(RetryableTask):  # type: ignore[misc]
            retry_backoff = 5

    class Mixin:
        autoretry_for = (OSError,)

    with pytest.raises(TypeError, match=r"sets autoretry_for: .*retry_on"):

        class Mixed(Mixin, RetryableTask):  # type: ignore[misc]
            pass


def test_autoretry_for_from_the_apps_task_annotations_is_refused() -> None:
    app = Celery("annotated", broker="memory://", set_as_current=False)
    app.conf.task_annotations = {"proj.fetch": {"autoretry_for": (OSError,)}}
    app.finalize()

    def fetch() -> None: ...

    with pytest.raises(TypeError, match="sets autoretry_for"):
        app.task(base=RetryableTask, shared=False, name="proj.fetch")(fetch)


def test_our_options_and_celerys_own_autoretry_stay_available(app: Celery) -> None:
    def fetch() -> None: ...

    ours = app.task(
        base=RetryableTask, shared=False, name="proj.ours", backoff_first=0.2, backoff_max=5
    )(fetch)
    assert (ours.backoff_first, ours.backoff_max) == (0.2, 5)
    stock = app.task(shared=False, name="proj.stock", autoretry_for=(OSError,), retry_backoff=2)(
        fetch
    )
    assert isinstance(stock, Task)
    assert not isinstance(stock, BaseTask)
    assert stock.autoretry_for == (OSError,)


# -- settings and queue -------------------------------------------------------


def test_settings_come_from_the_tasks_app() -> None:
    app = Celery("own", broker="redis://127.0.0.1:6399/3", set_as_current=False)
    task = app.task(base=BaseTask, shared=False, name="proj.own")(noop)
    assert task.settings.broker_url == "redis://127.0.0.1:6399/3"


def test_base_tasks_go_to_the_apps_default_queue(app: Celery) -> None:
    app.conf.task_default_queue = "bulk"
    plain = app.task(base=RetryableTask, shared=False, name="proj.plain")(noop)
    urgent = app.task(base=CriticalTask, shared=False, name="proj.urgent")(noop)
    slow = app.task(base=LongRunningTask, shared=False, name="proj.slow")(noop)
    assert BaseTask.queue is None
    with app.connection_for_write() as connection:
        for task, queue in ((plain, "bulk"), (urgent, "critical"), (slow, "low")):
            task.apply_async(connection=connection)
            message = connection.SimpleQueue(queue).get(timeout=1)
            assert message.headers["task"] == task.name
            message.ack()
