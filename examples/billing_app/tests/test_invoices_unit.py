"""Fast unit tests on the in-memory runner (fixture ``memory_runner``: no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from jobrunner import JobStatus
from jobrunner.testing import (
    InMemoryJobRunner,
    adrain,
    arun_handler,
    assert_enqueued,
    assert_not_enqueued,
    run_handler,
)

from billing_app import close_month, install_schedules
from billing_app.gateway import gateway
from billing_app.jobs import OUTBOX

TENANT = uuid.UUID("7b0e5c8e-2f5c-4a55-9a43-3d1b2f0c9e11")
USAGE = {
    "acme": [{"qty": 3, "unit_cents": 1000}],
    "globex": [{"qty": 1, "unit_cents": 4999}, {"qty": 2, "unit_cents": 500}],
}


async def test_closing_a_month_enqueues_one_invoice_per_customer(
    memory_runner: InMemoryJobRunner,
) -> None:
    await close_month(memory_runner, TENANT, "2030-01", USAGE)

    assert_enqueued(memory_runner, "generate-invoice", tenant=TENANT, count=2)
    assert_enqueued(
        memory_runner,
        "generate-invoice",
        {"customer_id": "acme", "month": "2030-01", "lines": USAGE["acme"]},
        tenant=TENANT,
        status="queued",
    )
    assert_not_enqueued(memory_runner, "generate-invoice")  # nothing for the system tenant
    assert gateway.charges == []  # nothing runs until drained


async def test_closing_twice_while_pending_does_not_invoice_twice(
    memory_runner: InMemoryJobRunner,
) -> None:
    first = await close_month(memory_runner, TENANT, "2030-01", USAGE)
    again = await close_month(memory_runner, TENANT, "2030-01", USAGE)
    assert [h.job_id for h in again] == [h.job_id for h in first]
    assert not any(h.created for h in again)
    assert_enqueued(memory_runner, "generate-invoice", tenant=TENANT, count=2)


async def test_draining_charges_customers_and_sends_the_emails(
    memory_runner: InMemoryJobRunner,
) -> None:
    handles = await close_month(memory_runner, TENANT, "2030-01", USAGE)

    await adrain(memory_runner)  # the invoices, then the e-mails they enqueued

    assert gateway.charges == [("acme", 3000), ("globex", 5999)]
    acme = await memory_runner.get_job_status(handles[0].job_id, tenant=TENANT)
    assert acme is not None
    assert acme.status is JobStatus.COMPLETED
    assert acme.result == {"invoice": "INV-2030-01-acme", "total_cents": 3000, "charge_id": "ch_1"}
    assert_enqueued(memory_runner, "send-invoice-email", tenant=TENANT, status="completed", count=2)
    assert [m["invoice"] for m in OUTBOX] == ["INV-2030-01-acme", "INV-2030-01-globex"]


async def test_a_gateway_outage_is_retried_with_backoff(memory_runner: InMemoryJobRunner) -> None:
    gateway.outages = 2
    started = memory_runner.clock.now()
    [handle] = await close_month(memory_runner, TENANT, "2030-01", {"acme": USAGE["acme"]})

    await adrain(memory_runner)  # jumps the fake clock over each backoff

    info = await memory_runner.get_job_status(handle.job_id, tenant=TENANT)
    assert info is not None
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 3
    # Backoff 30 s then 60 s (with up to 10 % jitter), on the fake clock: no real waiting.
    assert memory_runner.clock.now() - started >= timedelta(seconds=81)
    details = await memory_runner.get_job_details(handle.job_id, tenant=TENANT)
    assert details is not None
    attempts = [s.status for s in details.steps if s.step_name == "attempt"]
    assert attempts == [JobStatus.FAILED, JobStatus.FAILED, JobStatus.COMPLETED]


async def test_a_declined_card_fails_at_once_and_sends_no_email(
    memory_runner: InMemoryJobRunner,
) -> None:
    gateway.declined.add("acme")
    [handle] = await close_month(memory_runner, TENANT, "2030-01", {"acme": USAGE["acme"]})

    await adrain(memory_runner)

    info = await memory_runner.get_job_status(handle.job_id, tenant=TENANT)
    assert info is not None
    assert info.status is JobStatus.FAILED
    assert info.attempts == 1
    assert info.error is not None
    assert "declined" in info.error.message
    assert_not_enqueued(memory_runner, "send-invoice-email", tenant=TENANT)


async def test_the_handler_alone_with_a_fake_context(memory_runner: InMemoryJobRunner) -> None:
    run = await arun_handler(
        "generate-invoice",
        {"customer_id": "acme", "month": "2030-02", "lines": USAGE["acme"]},
        tenant=TENANT,
    )
    assert run.result["total_cents"] == 3000
    assert run.step_names == ["price", "charge"]
    assert run.steps[0].result == {"total_cents": 3000}
    assert run.progress == [(50, "priced")]
    # The handler enqueued its follow-up on the runner the application gets from the factory.
    assert_enqueued(memory_runner, "send-invoice-email", tenant=TENANT)


def test_the_reminder_handler_is_a_plain_function() -> None:
    run = run_handler("payment-reminders", {"customers": ["acme", "globex"]})
    assert run.result == 2
    assert run.progress == [(50, None), (100, None)]
    assert [m["customer_id"] for m in OUTBOX] == ["acme", "globex"]


async def test_reminders_run_every_morning_in_berlin(memory_runner: InMemoryJobRunner) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    memory_runner.clock.set(datetime(2030, 1, 7, 6, 0, tzinfo=berlin))
    schedule = await install_schedules(memory_runner, TENANT, ["acme"])

    await adrain(memory_runner, until=timedelta(days=2))

    [info] = await memory_runner.list_schedules(tenant=TENANT)
    assert info.job_id == schedule.job_id
    assert info.last_run_at == datetime(2030, 1, 8, 8, 0, tzinfo=berlin).astimezone(UTC)
    assert info.next_run_at == datetime(2030, 1, 9, 8, 0, tzinfo=berlin).astimezone(UTC)
    assert [m["kind"] for m in OUTBOX] == ["reminder", "reminder"]  # the 7th and the 8th
