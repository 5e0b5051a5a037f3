"""Orders in Django's admin."""

from django.contrib import admin

from orders.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """List and edit orders (e.g. fix an address, then replay the dead letter)."""

    list_display = ("id", "customer", "sku", "quantity", "status", "created_at", "fulfilled_by")
    list_filter = ("status",)
    search_fields = ("customer", "sku")
