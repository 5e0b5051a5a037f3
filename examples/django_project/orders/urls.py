"""URLs of the orders API."""

from django.urls import path

from orders import views

app_name = "orders"
urlpatterns = [
    path("", views.place_order, name="place"),
    path("<int:pk>/", views.order_detail, name="detail"),
]
