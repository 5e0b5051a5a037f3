"""The console's queues and workers pages (``worker_app.web.reports`` reads what they show)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, render_template

from worker_app.web.auth import login_required
from worker_app.web.context import console
from worker_app.web.reports import BrokerUnreachableError, queues_report, workers_report

broker_pages = Blueprint("broker_pages", __name__)


@broker_pages.get("/queues")
@login_required
def queues() -> Any:
    try:
        report = queues_report(console())
    except BrokerUnreachableError as error:
        page = render_template("error.html", title="Broker unreachable", message=str(error),
                               user=g.user)  # fmt: skip
        return page, 503
    steps = [str(step) for step in console().layout.priority_steps]
    return render_template("queues.html", report=report, steps=steps, user=g.user)


@broker_pages.get("/workers")
@login_required
def workers() -> Any:
    return render_template("workers.html", report=workers_report(console()), user=g.user)
