"""One producer's ``delay()`` latencies, in its own process (part of `make bench`).

``python -m tests.bench.publish_latency stock|worker_app COUNT`` publishes COUNT no-op tasks
to ``default`` on ``CELERY_BROKER_URL`` (``delay()`` with the queue named, as a routed task
is) and prints each call's wall time (ms) as JSON, after 50 unmeasured ones. Its
own process so that the stock producer runs kombu's own transport and nothing of
worker_app, and worker_app's runs its app (guard, headers, transport) as a producer does.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

QUEUE = "default"


def _task(variant: str) -> Any:
    if variant == "stock":
        from tests.support import stock_celery  # noqa: PLC0415

        stock_celery.app.loader.import_default_modules()
        return stock_celery.app.tasks["bench.plain_noop"]
    from worker_app.factory import create_app  # noqa: PLC0415
    from worker_app.settings import Settings  # noqa: PLC0415

    app = create_app(Settings.from_env())
    app.loader.import_default_modules()
    return app.tasks["bench.plain_noop"]


def main() -> int:
    """Publish, time each call, print the times."""
    variant, count = sys.argv[1], int(sys.argv[2])
    task = _task(variant)
    for _ in range(50):  # connections, pools and caches warm
        task.apply_async(queue=QUEUE)
    times = []
    for _ in range(count):
        began = time.perf_counter()
        task.apply_async(queue=QUEUE)
        times.append((time.perf_counter() - began) * 1000)
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
