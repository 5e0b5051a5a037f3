"""The JSON API for queues, workers, tasks and the health check."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from worker_app.dlq.query import FilterError
from worker_app.web.api_auth import basic_admin_required, basic_auth_required
from worker_app.web.api_dead_letters import json_body
from worker_app.web.context import console
from worker_app.web.json_errors import json_error
from worker_app.web.reports import (
    BrokerUnreachableError,
    health_report,
    queues_report,
    workers_report,
)
from worker_app.web.task_control import (
    TERMINATE_SIGNAL,
    TaskIdError,
    check_task_id,
    revoke_task,
    task_status,
)

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/queues")
@basic_auth_required
def queues() -> Any:
    try:
        return jsonify(queues_report(console()))
    except BrokerUnreachableError as error:
        return json_error(503, str(error))


@api.get("/workers")
@basic_auth_required
def workers() -> Any:
    return jsonify(workers_report(console()))


@api.get("/health")
@basic_auth_required
def health() -> Any:
    healthy, body = health_report(console())
    return jsonify(body), 200 if healthy else 503


@api.get("/tasks/<task_id>")
@basic_auth_required
def task(task_id: str) -> Any:
    try:
        status = task_status(console(), check_task_id(task_id))
    except TaskIdError as error:
        return json_error(400, str(error))
    return jsonify(status), 200 if status["result_backend"] else 501


@api.post("/tasks/<task_id>/revoke")
@basic_admin_required
def revoke(task_id: str) -> Any:
    """``{"terminate": true}`` also ends the task if it runs (SIGTERM to its process)."""
    try:
        task_id = check_task_id(task_id)
        body = json_body()
        unknown = sorted(set(body) - {"terminate"})
        if unknown:
            raise FilterError(f"unknown field {unknown[0]!r}: only terminate")
        terminate = body.get("terminate", False)
        if not isinstance(terminate, bool):
            raise FilterError("terminate must be true or false")
    except (TaskIdError, FilterError) as error:
        return json_error(400, str(error))
    acknowledged = revoke_task(console(), g.user, task_id, terminate)
    return jsonify(id=task_id, revoked=True, terminate=terminate,
                   signal=TERMINATE_SIGNAL if terminate else None,
                   workers_acknowledged=acknowledged)  # fmt: skip
