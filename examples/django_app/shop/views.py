"""A small JSON API (CSRF-exempt so that curl can call it; HTML forms keep CSRF)."""

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import aget_object_or_404, get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from jobrunner.contrib.django import aenqueue_on_commit, enqueue_on_commit

from shop.models import Order

OUT_OF_STOCK = {"unicorn"}


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    # ATOMIC_REQUESTS: this view is one transaction, and the job is written in it.
    order = Order.objects.create(email=request.POST["email"], item=request.POST["item"])
    enqueue_on_commit("send-order-confirmation", {"order_id": order.pk})
    if order.item in OUT_OF_STOCK:
        # Rolled back: the order and its confirmation job disappear together.
        transaction.set_rollback(True)
        return JsonResponse({"error": f"{order.item} is out of stock"}, status=409)
    return JsonResponse({"order": order.pk}, status=201)


@transaction.non_atomic_requests  # async views cannot run under ATOMIC_REQUESTS
@csrf_exempt
@require_POST
async def place_order_async(request: HttpRequest) -> JsonResponse:
    # An async view has no transaction: the writes that belong together go in one sync
    # function, run in Django's thread for database work.
    @sync_to_async
    def place() -> Order:
        with transaction.atomic():
            order = Order.objects.create(email=request.POST["email"], item=request.POST["item"])
            enqueue_on_commit("send-order-confirmation", {"order_id": order.pk})
            return order

    order = await place()
    return JsonResponse({"order": order.pk}, status=201)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"item": order.item, "confirmation_sent": order.confirmation_sent})


@transaction.non_atomic_requests  # async views cannot run under ATOMIC_REQUESTS
@csrf_exempt
@require_POST
async def resend_confirmation(request: HttpRequest, order_id: int) -> JsonResponse:
    order = await aget_object_or_404(Order, pk=order_id)
    handle = await aenqueue_on_commit("send-order-confirmation", {"order_id": order.pk})
    return JsonResponse({"job": str(handle.job_id)}, status=202)
