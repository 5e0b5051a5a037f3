"""The orders app's Celery tasks, on worker_app's base classes.

``@shared_task`` binds them to the project's app (``proj.celery.app``, configured by
``worker_app.configure``); the class picks the queue, so the pool (``CriticalTask``:
``critical``; ``RetryableTask``: the app's default queue, the catalogue's ``default``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from worker_app import CriticalTask, NonRetryableError, RetryableTask

from orders.models import Order

logger = logging.getLogger(__name__)


class UnshippableOrderError(NonRetryableError):
    """The order's data does not allow shipping it: retrying cannot help. The task goes
    to the dead-letter queue; fix the order, then replay it (``worker-app -A proj dlq
    replay ID``)."""


class OrderTask(CriticalTask):
    """Customer-facing order work on the ``critical`` pool. A database that is briefly
    unreachable is retried with backoff, like the broker's transient errors."""

    retry_on = (*CriticalTask.retry_on, OperationalError, InterfaceError)


@shared_task(base=OrderTask, bind=True, name="orders.fulfil_order")
def fulfil_order(self: OrderTask, order_id: int) -> str:
    """Ship a pending order; an order without a shipping address is dead-lettered."""
    with transaction.atomic():
        try:
            order = Order.objects.select_for_update().get(pk=order_id)
        except Order.DoesNotExist:
            raise UnshippableOrderError(f"order {order_id} does not exist") from None
        if order.status != Order.Status.PENDING:
            return f"order {order_id} is {order.status}: nothing to do"
        if not order.shipping_address.strip():
            raise UnshippableOrderError(f"order {order_id} has no shipping address")
        order.status = Order.Status.FULFILLED
        order.fulfilled_at = timezone.now()
        order.fulfilled_by = self.request.hostname or ""
        order.save(update_fields=["status", "fulfilled_at", "fulfilled_by"])
    logger.info("order %s fulfilled", order_id)
    return f"order {order_id} fulfilled"


@shared_task(base=RetryableTask, name="orders.expire_stale_orders")
def expire_stale_orders() -> int:
    """Expire the orders pending for longer than ``ORDERS_PENDING_TTL`` seconds (run by
    Beat from a periodic task in the database: ``manage.py schedule_expiry``)."""
    cutoff = timezone.now() - timedelta(seconds=settings.ORDERS_PENDING_TTL)
    expired = Order.objects.filter(status=Order.Status.PENDING, created_at__lt=cutoff).update(
        status=Order.Status.EXPIRED
    )
    if expired:
        logger.info("%d stale orders expired", expired)
    return expired
