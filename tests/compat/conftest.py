"""The compatibility suite runs on the end-to-end stack (`make up` in its own project) and
needs MIXIN_DIR (`make compat MIXIN_DIR=...`); without it, a plain `pytest` leaves it out."""

import os

from tests.e2e.conftest import stack

__all__ = ["stack"]

collect_ignore_glob = [] if os.environ.get("MIXIN_DIR") else ["test_*.py"]
