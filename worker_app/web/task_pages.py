"""The console's task pages: a task's status, and revoking it (admins, a confirmation first)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from worker_app.web.auth import admin_required, login_required
from worker_app.web.context import console
from worker_app.web.task_control import (
    TERMINATE_SIGNAL,
    TaskIdError,
    check_task_id,
    revoke_task,
    task_status,
)

task_pages = Blueprint("task_pages", __name__)


@task_pages.get("/tasks")
@login_required
def status() -> Any:
    raw = request.args.get("id", "")
    if not raw.strip():
        return render_template("task.html", status=None, user=g.user)
    try:
        found = task_status(console(), check_task_id(raw))
    except TaskIdError as error:
        return render_template("error.html", message=str(error), user=g.user), 400
    return render_template("task.html", status=found, user=g.user)


@task_pages.get("/tasks/<task_id>/revoke")
@admin_required
def revoke_confirm(task_id: str) -> Any:
    """What a revoke will do, with the form that does it."""
    try:
        task_id = check_task_id(task_id)
    except TaskIdError as error:
        return render_template("error.html", message=str(error), user=g.user), 400
    terminate = request.args.get("terminate") == "1"
    return render_template("revoke_confirm.html", task_id=task_id, terminate=terminate,
                           signal=TERMINATE_SIGNAL, user=g.user)  # fmt: skip


@task_pages.post("/tasks/<task_id>/revoke")
@admin_required
def revoke(task_id: str) -> Any:
    try:
        task_id = check_task_id(task_id)
    except TaskIdError as error:
        return render_template("error.html", message=str(error), user=g.user), 400
    terminate = request.form.get("terminate") == "1"
    acknowledged = revoke_task(console(), g.user, task_id, terminate)
    how = f" and sent {TERMINATE_SIGNAL} to it if it runs" if terminate else ""
    flash(f"Revoked {task_id}{how}: {acknowledged} workers acknowledged.")
    return redirect(url_for("task_pages.status", id=task_id))
