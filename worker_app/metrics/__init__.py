"""Prometheus metrics: worker-side (per node, prefork-correct) and broker-side (exporter).

Nothing here is imported by ``worker_app`` itself: prometheus_client decides at
import time whether it runs in multiprocess mode, so the worker command sets
``PROMETHEUS_MULTIPROC_DIR`` first and imports these modules afterwards.
"""
