"""kombu's own Redis integration tests, stock and with worker_app's transport (make upstream)."""
