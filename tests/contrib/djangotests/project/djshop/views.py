"""Views that enqueue jobs in their transaction (sync under ATOMIC_REQUESTS, and async)."""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, JsonResponse

from djshop.models import Order
from jobrunner import ALL_TENANTS
from jobrunner.contrib.django import aenqueue_on_commit, enqueue_on_commit

SHOP_TENANT = uuid.UUID("0b7e4c8a-52d1-4c8e-9a0e-7d5b1e6f2a10")


def _place(post: Any) -> tuple[Order, str]:
    order = Order.objects.create(sku=post["sku"])
    handle = enqueue_on_commit(
        "djshop-confirm-order", {"order_id": order.pk}, tenant=post.get("tenant") or SHOP_TENANT
    )
    if post.get("fail") == "exception":
        raise RuntimeError("payment declined")
    if post.get("fail") == "rollback":
        transaction.set_rollback(True)
    return order, str(handle.job_id)


def create_order(request: HttpRequest) -> JsonResponse:
    """Runs in the request's transaction (ATOMIC_REQUESTS)."""
    order, job_id = _place(request.POST)
    return JsonResponse({"order_id": order.pk, "job_id": job_id})


@transaction.non_atomic_requests  # async views cannot run under ATOMIC_REQUESTS
async def create_order_async(request: HttpRequest) -> JsonResponse:
    """The transaction is a sync function's, awaited through sync_to_async."""

    @sync_to_async
    def place() -> tuple[Order, str]:
        with transaction.atomic():
            return _place(request.POST)

    order, job_id = await place()
    return JsonResponse({"order_id": order.pk, "job_id": job_id})


@transaction.non_atomic_requests
async def ping_async(request: HttpRequest) -> JsonResponse:
    handle = await aenqueue_on_commit("djshop-ping", {}, tenant=SHOP_TENANT)
    return JsonResponse({"job_id": str(handle.job_id)})


def dashboard_tenant(request: HttpRequest) -> Any:
    """JOBRUNNER["DASHBOARD"]["TENANT"]: superusers see every tenant, staff the shop's."""
    return ALL_TENANTS if request.user.is_superuser else SHOP_TENANT
