"""The console's audit log: one line per change (who, what, how many)."""

from __future__ import annotations

import logging

audit = logging.getLogger("worker_app.web.audit")
