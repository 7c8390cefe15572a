"""Handlers, found by jobrunner.contrib.django's discovery of each app's ``jobs`` module."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections

from jobrunner import SyncJobContext, job


@job("djshop-confirm-order")
def confirm_order(ctx: SyncJobContext, data: dict[str, Any]) -> dict[str, Any]:
    from djshop.models import Order

    close_old_connections()
    try:
        updated = Order.objects.filter(pk=data["order_id"]).update(confirmed=True)
    finally:
        close_old_connections()
    return {"confirmed": updated}


@job("djshop-ping")
async def ping(ctx: Any, data: dict[str, Any]) -> str:
    return "pong"
