from django.urls import include, path
from djshop import views

urlpatterns = [
    path("orders/", views.create_order),
    path("orders/async/", views.create_order_async),
    path("ping/async/", views.ping_async),
    path("admin/jobs/", include("jobrunner.contrib.django.urls")),
]
