"""``manage.py fulfil_pending``: publish the fulfilment of every pending order (after an
outage, or for orders imported in bulk)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from orders.models import Order
from orders.tasks import fulfil_order


class Command(BaseCommand):
    """Publish ``orders.fulfil_order`` for pending orders."""

    help = "Publish orders.fulfil_order for every pending order."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--sku``: only orders of this SKU."""
        parser.add_argument("--sku", help="Only pending orders of this SKU.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Publish one task per pending order and say how many."""
        pending = Order.objects.filter(status=Order.Status.PENDING)
        if options["sku"]:
            pending = pending.filter(sku=options["sku"])
        published = 0
        for order_id in pending.values_list("pk", flat=True).order_by("pk"):
            result = fulfil_order.delay(order_id)
            self.stdout.write(f"order {order_id}: task {result.id}")
            published += 1
        self.stdout.write(self.style.SUCCESS(f"published {published} fulfilment task(s)"))
