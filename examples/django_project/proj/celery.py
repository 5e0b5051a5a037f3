"""The project's Celery app, the way Django projects create it, made safe on Redis by
``worker_app.configure``: its settings, transport, dead-letter queue and pools."""

import os

import worker_app
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
# Every CELERY_* name in Django's settings (CELERY_BROKER_URL -> broker_url, ...).
app.config_from_object("django.conf:settings", namespace="CELERY")
# The bundle's settings, transport, DLQ consumer, queues of the pool catalogue, ...
worker_app.configure(app)
# tasks.py of every installed Django app.
app.autodiscover_tasks()
