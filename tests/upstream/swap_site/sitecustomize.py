"""On PYTHONPATH of a swapped upstream run only (tests/upstream/run.py): every Python process
the suite starts (Celery's suite runs ``celery worker`` subprocesses in a few tests) serves
``redis://`` with worker_app's transport too, not just the pytest process."""

from worker_app import broker_transport

broker_transport.install()
