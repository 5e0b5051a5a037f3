"""pytest plugin (``-p tests.upstream.swap_transport``): kombu's ``redis://`` is served by
worker_app's transport in the test process, as ``worker_app.configure`` makes it in a worker.

Nothing in the upstream test files changes: the suite runs as a maintainer would run it, with
the transport swapped in underneath. At the end of the session the plugin prints how many
connections worker_app's transport established in the test process (producer, and for Celery's
suite its in-process worker too), so a run that never used it cannot pass for a comparison
(tests/upstream/run.py checks the line)."""

from __future__ import annotations

import functools
from typing import Any

_established = 0


def pytest_configure(config: Any) -> None:
    """Install the transport before the suite imports anything that connects; count the
    connections it establishes."""
    from worker_app import broker_transport  # noqa: PLC0415 - only when the plugin is asked for

    broker_transport.install()
    original = broker_transport.Transport.establish_connection
    if getattr(original, "_counted", False):
        return

    @functools.wraps(original)
    def establish_connection(self: Any) -> Any:
        global _established  # noqa: PLW0603 - a counter for the end of the session
        _established += 1
        return original(self)

    establish_connection._counted = True  # type: ignore[attr-defined]
    broker_transport.Transport.establish_connection = establish_connection


def pytest_report_header(config: Any) -> str:
    """Say which transport serves ``redis://`` in this run."""
    import kombu.transport  # noqa: PLC0415

    return f"redis:// transport: {kombu.transport.TRANSPORT_ALIASES['redis']}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many connections worker_app's transport established in this process."""
    terminalreporter.write_line(
        f"worker_app transport: {_established} connection(s) established in the test process"
    )
