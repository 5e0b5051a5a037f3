"""An order, its status and who fulfilled it."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Order(models.Model):
    """A customer's order; ``orders.fulfil_order`` ships it, ``orders.expire_stale_orders``
    expires it when it waited too long."""

    class Status(models.TextChoices):
        PENDING = "pending"
        FULFILLED = "fulfilled"
        EXPIRED = "expired"

    customer = models.CharField(max_length=200)
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField(default=1)
    shipping_address = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    created_at = models.DateTimeField(default=timezone.now)
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    # The Celery worker node that fulfilled it (e.g. critical@host).
    fulfilled_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"

    def as_dict(self) -> dict[str, object]:
        """The order as the API returns it."""
        return {
            "id": self.pk,
            "customer": self.customer,
            "sku": self.sku,
            "quantity": self.quantity,
            "shipping_address": self.shipping_address,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "fulfilled_at": self.fulfilled_at.isoformat() if self.fulfilled_at else None,
            "fulfilled_by": self.fulfilled_by,
        }
