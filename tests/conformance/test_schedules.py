"""Conformance: recurring schedules are created, updated in place, listed, paused, resumed,
cancelled and (where the backend's clock can be moved) fired the same way on every backend."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from jobrunner import JobContext, JobStatus, ScheduleError

from .conftest import Backend


async def _register(backend: Backend) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []

    async def report(ctx: JobContext, data: dict[str, Any]) -> None:
        runs.append({"data": data, "schedule_id": ctx.schedule_id})

    backend.registry.add("report", report)
    return runs


async def test_create_update_in_place_and_list(backend: Backend) -> None:
    await _register(backend)
    tenant = uuid.uuid4()
    created = await backend.runner.schedule_recurring_job(
        "report", {"kind": "daily"}, "0 6 * * *", tenant=tenant, timezone="Europe/Berlin"
    )
    assert created.created
    assert created.tenant == tenant
    [listed] = await backend.runner.list_schedules(tenant=tenant)
    assert listed.job_id == created.job_id
    assert listed.name == "report"
    assert listed.expression == "0 6 * * *"
    assert listed.timezone == "Europe/Berlin"
    assert listed.data == {"kind": "daily"}
    assert not listed.paused
    assert listed.next_run_at is not None
    assert listed.runner_type == backend.name

    updated = await backend.runner.schedule_recurring_job(
        "report", {"kind": "hourly"}, "1 hours", tenant=tenant
    )
    assert not updated.created
    assert updated.job_id == created.job_id
    [again] = await backend.runner.list_schedules(tenant=tenant)
    assert again.job_id == created.job_id
    assert again.timezone == "UTC"
    assert again.data == {"kind": "hourly"}

    other = await backend.runner.schedule_recurring_job(
        "report", {}, "@daily", tenant=tenant, singleton_key="second"
    )
    assert other.created
    assert other.job_id != created.job_id
    assert len(await backend.runner.list_schedules(tenant=tenant)) == 2
    assert await backend.runner.list_schedules(tenant=uuid.uuid4()) == []


async def test_pause_resume_and_cancel(backend: Backend) -> None:
    await _register(backend)
    tenant = uuid.uuid4()
    handle = await backend.runner.schedule_recurring_job("report", {}, "5 minutes", tenant=tenant)
    assert not await backend.runner.pause_schedule(handle.job_id)  # wrong tenant
    assert await backend.runner.pause_schedule(handle.job_id, tenant=tenant)
    [paused] = await backend.runner.list_schedules(tenant=tenant)
    assert paused.paused
    assert await backend.runner.resume_schedule(handle.job_id, tenant=tenant)
    [resumed] = await backend.runner.list_schedules(tenant=tenant)
    assert not resumed.paused
    assert resumed.next_run_at is not None

    assert not await backend.runner.cancel_job(handle.job_id, tenant=uuid.uuid4())
    assert await backend.runner.cancel_job(handle.job_id, tenant=tenant)
    assert await backend.runner.list_schedules(tenant=tenant) == []
    assert not await backend.runner.pause_schedule(handle.job_id, tenant=tenant)
    assert not await backend.runner.cancel_job(handle.job_id, tenant=tenant)
    tracker = await backend.runner.get_job_status(handle.job_id, tenant=tenant)
    assert tracker is not None
    assert tracker.status is JobStatus.CANCELLED


async def test_bad_schedules_are_refused(backend: Backend) -> None:
    await _register(backend)
    with pytest.raises(ScheduleError):
        await backend.runner.schedule_recurring_job("report", {}, "every now and then")
    with pytest.raises(ScheduleError):
        await backend.runner.schedule_recurring_job("report", {}, "0 0 * * *", timezone="Mars/Base")
    assert await backend.runner.list_schedules() == []


async def test_a_cron_expression_that_never_fires_is_refused(backend: Backend) -> None:
    await _register(backend)
    with pytest.raises(ScheduleError):
        await backend.runner.schedule_recurring_job("report", {}, "0 0 31 2 *")
    assert await backend.runner.list_schedules() == []


async def test_expressions_are_listed_normalised(backend: Backend) -> None:
    await _register(backend)
    await backend.runner.schedule_recurring_job("report", {}, "1 hours")
    await backend.runner.schedule_recurring_job("report", {}, "90  MINUTES", singleton_key="b")
    listed = sorted(s.expression for s in await backend.runner.list_schedules())
    assert listed == ["1 hour", "90 minutes"]


async def test_a_paused_schedule_has_no_next_run(backend: Backend) -> None:
    await _register(backend)
    handle = await backend.runner.schedule_recurring_job("report", {}, "5 minutes")
    assert await backend.runner.pause_schedule(handle.job_id)
    [paused] = await backend.runner.list_schedules()
    assert paused.paused
    assert paused.next_run_at is None


@pytest.mark.requires("time_travel")
async def test_a_schedule_fires_one_job_per_tick(backend: Backend) -> None:
    runs = await _register(backend)
    handle = await backend.runner.schedule_recurring_job("report", {"n": 1}, "30 minutes")
    await backend.advance(timedelta(minutes=10))
    assert runs == []
    await backend.advance(timedelta(minutes=61))
    assert [r["data"] for r in runs] == [{"n": 1}, {"n": 1}]
    assert {r["schedule_id"] for r in runs} == {handle.job_id}
    [info] = await backend.runner.list_schedules()
    assert info.last_run_status is JobStatus.COMPLETED
    assert info.last_job_id is not None
    last = await backend.runner.get_job_status(info.last_job_id)
    assert last is not None
    assert last.schedule_id == handle.job_id


@pytest.mark.requires("time_travel")
async def test_a_paused_schedule_does_not_fire(backend: Backend) -> None:
    runs = await _register(backend)
    handle = await backend.runner.schedule_recurring_job("report", {}, "10 minutes")
    assert await backend.runner.pause_schedule(handle.job_id)
    await backend.advance(timedelta(minutes=45))
    assert runs == []
    assert await backend.runner.resume_schedule(handle.job_id)
    await backend.advance(timedelta(minutes=11))
    assert len(runs) == 1
