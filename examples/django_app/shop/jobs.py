"""Handlers: jobrunner.contrib.django imports every installed app's ``jobs`` module."""

from django.core.mail import send_mail
from django.db import close_old_connections
from jobrunner import RetryPolicy, SyncJobContext, job

from shop.models import Order


@job("send-order-confirmation", retry=RetryPolicy(max_attempts=5), timeout=60)
def send_order_confirmation(ctx: SyncJobContext, data: dict) -> dict:
    # Plain `def` handlers run in worker threads: treat a job like a request, whose
    # database connections Django closes or recycles (CONN_MAX_AGE) around it.
    close_old_connections()
    try:
        order = Order.objects.get(pk=data["order_id"])
        send_mail(
            f"Your order #{order.pk}",
            f"We received your order of {order.item}.",
            "shop@example.com",
            [order.email],
        )
        Order.objects.filter(pk=order.pk).update(confirmation_sent=True)
        return {"sent_to": order.email}
    finally:
        close_old_connections()
