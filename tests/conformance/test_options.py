"""Conformance: every runner takes the same scheduling options (jobrunner._options) with the
same defaults, and refuses a keyword no option declares with ``UnknownOptionError`` (also the
``TypeError`` Python raises) before writing anything."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import JobContext, JobStatus, UnknownOptionError

from .conftest import Backend

CALLS: dict[str, Callable[[Backend], Awaitable[Any]]] = {
    "schedule_job": lambda b: b.runner.schedule_job("noop", {}, bogus=1),
    "schedule_job_at": lambda b: b.runner.schedule_job_at(
        "noop", {}, datetime.now(UTC) + timedelta(hours=1), bogus=1
    ),
    "schedule_jobs": lambda b: b.runner.schedule_jobs("noop", [{}], bogus=1),
    "schedule_recurring_job": lambda b: b.runner.schedule_recurring_job(
        "noop", {}, "5 minutes", bogus=1
    ),
    "a near miss": lambda b: b.runner.schedule_job("noop", {}, tenant_id=uuid.uuid4()),
}


async def _noop(ctx: JobContext, data: dict[str, Any]) -> None:
    return None


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
async def test_an_unknown_option_is_refused_and_nothing_is_written(
    backend: Backend, call: str
) -> None:
    backend.registry.add("noop", _noop)
    with pytest.raises(UnknownOptionError, match=r"bogus|tenant_id") as info:
        await CALLS[call](backend)
    assert isinstance(info.value, TypeError)
    assert (await backend.runner.list_jobs()).jobs == []
    assert await backend.runner.list_schedules() == []


async def test_the_defaults_are_the_same_on_every_backend(backend: Backend) -> None:
    backend.registry.add("noop", _noop, queue="reports")
    handle = await backend.runner.schedule_job("noop")
    info = await backend.runner.get_job_status(handle.job_id)
    assert info is not None
    assert (info.status, info.priority, info.queue) == (JobStatus.QUEUED, 0, "reports")
    assert handle.tenant == uuid.UUID(int=0)  # the system tenant
    await backend.runner.schedule_recurring_job("noop", {}, "1 hours")
    [schedule] = await backend.runner.list_schedules()
    assert schedule.timezone == "UTC"
    assert (schedule.missed_ticks.value, schedule.overlap.value) == ("latest", "allow")
