from django.contrib import admin
from django.urls import include, path

from shop import views

urlpatterns = [
    path("orders/", views.place_order),
    path("orders/async/", views.place_order_async),
    path("orders/<int:order_id>/", views.order_status),
    path("orders/<int:order_id>/resend/", views.resend_confirmation),
    # Before admin/, whose catch-all would answer first.
    path("admin/jobs/", include("jobrunner.contrib.django.urls")),
    path("admin/", admin.site.urls),
]
