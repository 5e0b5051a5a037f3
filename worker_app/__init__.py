"""worker_app: the Celery application deployed on every host of the bundle.

``celery -A worker_app worker`` finds the application as ``worker_app.app``.
"""

from __future__ import annotations

from worker_app.app import create_app

__all__ = ["app", "create_app"]
__version__ = "0.1.0"

app = create_app()
