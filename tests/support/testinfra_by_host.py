"""pytest plugin for molecule's testinfra verifiers: a scenario's hosts verified side by side.

With ``-n 2`` each xdist worker takes one host and runs that host's tests in file order (a test
that restarts a service or waits for an alert still runs after the ones before it on the same
host). Most of a verifier's time is waiting (for a scrape, an alert, a delivery), so two hosts
take about as long as one. Loaded by `.config/molecule/config.yml` (``-p``).

A scheduler of its own (xdist's ``pytest_xdist_make_scheduler`` hook) because
``--dist loadgroup`` cannot group here: xdist 3.8 marks a group by rewriting ``Item._nodeid``,
which pytest 9 no longer reads, so marked tests are spread like unmarked ones.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

#: testinfra's id of a host parameter, e.g. ``test_x[ansible://prometheus-bookworm]``
_HOST_ID = re.compile(r"\[(\w+://[^\]]+)\]$")


class ByHostScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
    """LoadScope with one scope per testinfra host (other tests: per module, as loadscope)."""

    def _split_scope(self, nodeid: str) -> str:
        found = _HOST_ID.search(nodeid)
        return found.group(1) if found else str(super()._split_scope(nodeid))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ByHostScheduling:
    """Schedule by host."""
    return ByHostScheduling(config, log)
