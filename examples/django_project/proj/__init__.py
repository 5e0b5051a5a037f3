"""The example project: the Celery app is loaded with Django so that ``@shared_task`` binds
to it (as Django's Celery docs show)."""

from proj.celery import app as celery_app

__all__ = ("celery_app",)
