"""A task's status from the result backend, and revoking a task (for the pages and the API)."""

from __future__ import annotations

from typing import Any

from celery.backends.base import DisabledBackend
from celery.result import AsyncResult

from worker_app.web.audit import audit
from worker_app.web.context import Console
from worker_app.web.users import User

#: The longest task id the console accepts (Celery's are 36-character UUIDs).
MAX_TASK_ID = 200
#: The signal ``terminate`` sends to the process running the task.
TERMINATE_SIGNAL = "SIGTERM"


class TaskIdError(ValueError):
    """Not a task id the console accepts."""


def check_task_id(task_id: str) -> str:
    """``task_id`` stripped, if it is one the console accepts (``TaskIdError`` otherwise)."""
    task_id = task_id.strip()
    if not task_id or len(task_id) > MAX_TASK_ID or not task_id.isprintable():
        raise TaskIdError(f"a task id is 1-{MAX_TASK_ID} printable characters")
    return task_id


def has_result_backend(app: Any) -> bool:
    """Whether ``app`` stores task results (without one, no status can be read)."""
    return not isinstance(app.backend, DisabledBackend)


def task_status(console: Console, task_id: str) -> dict[str, Any]:
    """What the result backend knows of ``task_id``: its state, and its result or exception
    and when it finished. A PENDING task is one the backend has no record of: still waiting,
    never sent, or its result expired."""
    app = console.celery_app
    if not has_result_backend(app):
        message = "this app has no result backend: task status is not recorded"
        return {"id": task_id, "result_backend": False, "state": None, "message": message}
    result = AsyncResult(task_id, app=app)
    state = str(result.state)
    body: dict[str, Any] = {"id": task_id, "result_backend": True, "state": state,
                            "result": None, "exception": None, "traceback": None,
                            "date_done": None}  # fmt: skip
    outcome = result.result
    if isinstance(outcome, BaseException):
        body["exception"] = f"{type(outcome).__name__}: {outcome}"
        body["traceback"] = result.traceback
    else:
        body["result"] = outcome
    if result.date_done is not None:
        done = result.date_done
        body["date_done"] = done.isoformat() if hasattr(done, "isoformat") else str(done)
    if state == "PENDING":
        body["message"] = ("the result backend has no record of this id: it is waiting, was "
                           "never sent, or its result expired")  # fmt: skip
    return body


def revoke_task(console: Console, user: User, task_id: str, terminate: bool) -> int:
    """Revoke ``task_id`` on every worker (with ``terminate``, a running task's process gets
    SIGTERM); returns how many workers acknowledged within the remote-control timeout."""
    replies = console.celery_app.control.revoke(
        task_id, terminate=terminate, signal=TERMINATE_SIGNAL, reply=True,
        timeout=console.control_timeout,
    )  # fmt: skip
    acknowledged = len(replies or [])
    how = f" with terminate ({TERMINATE_SIGNAL})" if terminate else ""
    audit.info("%s revoked task %s%s: %d workers acknowledged",
               user.name, task_id, how, acknowledged)  # fmt: skip
    return acknowledged
