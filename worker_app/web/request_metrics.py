"""The console's own request metrics for Prometheus, at ``GET /metrics`` (HTTP Basic, any
console user). Each console has its own registry: nothing is registered at import, and two
consoles in one process count apart. ``endpoint`` is the Flask endpoint name (``none`` for a
path that matched no route), never the raw path, so the series stay few."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from worker_app.web.api_auth import basic_auth_required

#: Methods counted by name; any other is counted as ``other`` (the series stay few).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install(app: Flask) -> CollectorRegistry:
    """Count every request of ``app`` and serve the counts at ``/metrics``."""
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "worker_app_console_requests",
        "Requests the console answered, by method, Flask endpoint and status code.",
        ("method", "endpoint", "status"),
        registry=registry,
    )
    duration = Histogram(
        "worker_app_console_request_duration_seconds",
        "Time the console took to answer a request, by method and Flask endpoint.",
        ("method", "endpoint"),
        registry=registry,
    )

    @app.before_request
    def started() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        method = request.method if request.method in METHODS else "other"
        endpoint = request.endpoint or "none"
        requests.labels(method, endpoint, str(response.status_code)).inc()
        began = g.get("request_started")
        if began is not None:
            duration.labels(method, endpoint).observe(time.perf_counter() - began)
        return response

    @app.get("/metrics")
    @basic_auth_required
    def metrics() -> Any:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return registry
