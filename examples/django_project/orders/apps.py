"""The orders app."""

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    """Orders placed by customers, fulfilled by Celery tasks."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "orders"
