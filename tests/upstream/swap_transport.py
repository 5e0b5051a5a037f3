"""pytest plugin (``-p tests.upstream.swap_transport``): kombu's ``redis://`` is served by
worker_app's transport in the test process, as ``worker_app.configure`` makes it in a worker.

Nothing in kombu's test files changes: the suite runs as a maintainer would run it, with the
transport swapped in underneath."""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    """Install the transport before the suite imports anything that connects."""
    from worker_app import broker_transport  # noqa: PLC0415 - only when the plugin is asked for

    broker_transport.install()


def pytest_report_header(config: Any) -> str:
    """Say which transport serves ``redis://`` in this run."""
    import kombu.transport  # noqa: PLC0415

    return f"redis:// transport: {kombu.transport.TRANSPORT_ALIASES['redis']}"
