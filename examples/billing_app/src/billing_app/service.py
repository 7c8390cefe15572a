"""What the application's request handlers and admin commands call."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from jobrunner import JobRunner, ScheduledJob

import billing_app.jobs  # noqa: F401 - registers the handlers


async def close_month(
    runner: JobRunner,
    tenant: uuid.UUID,
    month: str,
    usage: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[ScheduledJob]:
    """Enqueue one invoice job per customer.

    A customer whose invoice job is still waiting or running is not invoiced twice: the
    singleton key returns the existing job.
    """
    handles = []
    for customer_id, lines in sorted(usage.items()):
        handles.append(
            await runner.schedule_job(
                "generate-invoice",
                {"customer_id": customer_id, "month": month, "lines": list(lines)},
                tenant=tenant,
                singleton_key=f"invoice:{month}:{customer_id}",
            )
        )
    return handles


async def install_schedules(
    runner: JobRunner, tenant: uuid.UUID, overdue: Sequence[str]
) -> ScheduledJob:
    """Payment reminders every morning at 08:00 Berlin time (idempotent)."""
    return await runner.schedule_recurring_job(
        "payment-reminders",
        {"customers": list(overdue)},
        "0 8 * * *",
        tenant=tenant,
        timezone="Europe/Berlin",
    )
