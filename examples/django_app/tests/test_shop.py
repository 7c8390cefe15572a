"""The shop's flows, with the jobs run in the test by ``jobrunner.testing.drain``."""

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from jobrunner import JobStatus
from jobrunner.contrib.django import get_runner
from jobrunner.testing import drain

from shop.models import Order

# Real commits: the jobs are read by the runner's own connections, as a worker would.
pytestmark = pytest.mark.django_db(transaction=True)


def confirmation_jobs() -> list:
    return get_runner().list_jobs(name="send-order-confirmation", limit=500).jobs


def test_an_order_is_confirmed_by_its_job() -> None:
    response = Client().post("/orders/", {"email": "ada@example.com", "item": "teapot"})
    assert response.status_code == 201
    order_id = response.json()["order"]
    [job] = confirmation_jobs()
    assert job.status is JobStatus.QUEUED

    drain(get_runner())  # what `manage.py jobrunner_worker` does

    assert get_runner().get_job_status(job.job_id).status is JobStatus.COMPLETED
    assert Client().get(f"/orders/{order_id}/").json() == {
        "item": "teapot",
        "confirmation_sent": True,
    }
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]


def test_a_refused_order_leaves_no_job() -> None:
    before = len(confirmation_jobs())
    response = Client().post("/orders/", {"email": "bob@example.com", "item": "unicorn"})
    assert response.status_code == 409
    assert not Order.objects.filter(item="unicorn").exists()
    assert len(confirmation_jobs()) == before


def test_an_async_view_enqueues_in_its_transaction() -> None:
    before = len(confirmation_jobs())
    response = Client().post("/orders/async/", {"email": "dee@example.com", "item": "mug"})
    assert response.status_code == 201
    assert len(confirmation_jobs()) == before + 1


def test_resend_from_an_async_view() -> None:
    order = Order.objects.create(email="cy@example.com", item="kettle")
    response = Client().post(f"/orders/{order.pk}/resend/")  # the test client runs async views
    assert response.status_code == 202
    info = get_runner().get_job_status(response.json()["job"])
    assert info.name == "send-order-confirmation"


def test_the_dashboard_is_for_staff() -> None:
    anonymous = Client().get("/admin/jobs/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")

    customer = Client()
    customer.force_login(User.objects.create_user("customer"))
    assert customer.get("/admin/jobs/").status_code == 403

    staff = Client()
    staff.force_login(User.objects.create_user("clerk", is_staff=True))
    page = staff.get("/admin/jobs/")
    assert page.status_code == 200
    assert "shop jobs" in page.content.decode()
