"""A small JSON API: place an order (its fulfilment is published to Celery) and read it."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from orders.models import Order
from orders.tasks import fulfil_order


# A machine-to-machine API (JSON, no browser session): CSRF protection does not apply.
@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> HttpResponse:
    """``POST /orders/`` with ``{"customer", "sku", "quantity", "shipping_address"}``:
    the order is saved and, once committed, its fulfilment is published."""
    try:
        data = json.loads(request.body)
        order = Order(
            customer=str(data["customer"]),
            sku=str(data["sku"]),
            quantity=int(data.get("quantity", 1)),
            shipping_address=str(data.get("shipping_address", "")),
        )
    except (ValueError, TypeError, KeyError) as exc:
        return JsonResponse({"error": f"invalid order: {exc}"}, status=400)
    if order.quantity < 1:
        return JsonResponse({"error": "invalid order: quantity must be at least 1"}, status=400)
    with transaction.atomic():
        order.save()
        # Published only if the order is committed: a worker never looks for a missing row.
        transaction.on_commit(lambda: fulfil_order.delay(order.pk))
    return JsonResponse(order.as_dict(), status=202)


@require_GET
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """``GET /orders/<id>/``: the order and its status."""
    return JsonResponse(get_object_or_404(Order, pk=pk).as_dict())
