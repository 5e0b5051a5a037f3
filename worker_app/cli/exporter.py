"""``worker-app exporter``: the broker-side Prometheus exporter."""

from __future__ import annotations

import logging
import os
import time

import click

from worker_app.cli.app_option import app_option, cli_app


@click.command()
@app_option
@click.option("--port", type=click.IntRange(1, 65535), default=9808, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Bind address (private).")
@click.option("--queue", "extra_queues", multiple=True, help="Another queue to watch (repeatable).")
@click.option(
    "--unacked-scan-limit",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Split unacked messages by queue only while there are at most this many.",
)
@click.option(
    "--events/--no-events",
    default=True,
    show_default=True,
    help="Follow Celery's event stream: task-sent counts and every worker node's liveness.",
)
@click.option(
    "--worker-timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds without a heartbeat after which a node's celery_worker_up turns 0.",
)
@click.option(
    "--forget-worker-after",
    type=click.FloatRange(min=0),
    default=86_400.0,
    show_default=True,
    help="Seconds after which a silent node is dropped from celery_worker_up (0: never).",
)
@click.option(
    "--inspect-interval",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds between asking the workers which queues they consume (0: never).",
)
@click.option(
    "--tls-probe-interval",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds between TLS handshakes with the Redis endpoints (rediss://, or Sentinel "
    "with WORKER_APP_SENTINEL_TLS) that report their certificates' expiry (0: never).",
)
def exporter(
    port: int,
    address: str,
    extra_queues: tuple[str, ...],
    unacked_scan_limit: int,
    events: bool,
    worker_timeout: float,
    forget_worker_after: float,
    inspect_interval: float,
    tls_probe_interval: float,
) -> None:
    """Serve broker-side metrics: queue lengths per priority, unacked, DLQ, worker nodes up,
    consumers per queue, and the pool catalogue (pools, their queues and wait SLOs) for the
    alert rules."""
    # This process keeps its own registry: never the workers' multiprocess mode.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from prometheus_client import disable_created_metrics, start_http_server  # noqa: PLC0415

    disable_created_metrics()  # type: ignore[no-untyped-call]

    from worker_app import json_logging  # noqa: PLC0415
    from worker_app.configuration import catalogue_of, settings_of  # noqa: PLC0415

    app = cli_app()
    from worker_app.broker_state import QueueLayout  # noqa: PLC0415
    from worker_app.dlq.writer import store_for  # noqa: PLC0415
    from worker_app.metrics.exporter import (  # noqa: PLC0415
        WorkerWatch,
        build_registry,
        queues_with_extra,
    )
    from worker_app.state_redis import broker_client  # noqa: PLC0415

    settings = settings_of(app)
    catalogue = catalogue_of(app)
    json_logging.configure(logging.INFO, settings.log_format)
    layout = QueueLayout.from_transport_options(
        queues_with_extra(catalogue.queue_names, extra_queues), app.conf.broker_transport_options
    )
    registry, _collector = build_registry(
        app,
        broker_client(settings),
        layout,
        store_for(settings),
        unacked_scan_limit,
        WorkerWatch(events, worker_timeout, forget_worker_after, inspect_interval),
        catalogue,
    )
    if tls_probe_interval:
        from worker_app.metrics.tls_expiry import TLSExpiryCollector, endpoints_of  # noqa: PLC0415

        urls = list(dict.fromkeys((settings.broker_url, settings.state_redis_url)))
        if endpoints_of(urls, None) or (settings.sentinel and settings.sentinel.tls):
            registry.register(
                TLSExpiryCollector(
                    lambda: endpoints_of(urls, settings.sentinel),
                    settings.tls,
                    tls_probe_interval,
                )
            )
    start_http_server(port, addr=address, registry=registry)
    logging.getLogger("worker_app.exporter").info(
        "exporter on http://%s:%d/metrics watching %s", address, port, ", ".join(layout.queues)
    )
    while True:
        time.sleep(3600)
