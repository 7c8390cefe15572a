"""Tenant isolation: another tenant's job is "not found" for every method."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from apps.helpers import job_row
from jobrunner import JobContext, JobHandlerRegistry, JobNotFoundError, JobStatus
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

A = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")
B = uuid.UUID("bbbbbbbb-0000-0000-0000-000000000002")


async def test_other_tenant_sees_nothing(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("t", handler)
    handle = await runner.schedule_job("t", {"secret": 1}, tenant=A)
    for other in (B, str(B), None):
        assert await runner.get_job_status(handle.job_id, tenant=other) is None
        assert await runner.get_job_details(handle.job_id, tenant=other) is None
        assert await runner.cancel_job(handle.job_id, tenant=other) is False
        with pytest.raises(JobNotFoundError):
            await runner.wait_for_job(handle.job_id, tenant=other, timeout=5)
    # the owner sees it, by UUID or by string, and it is untouched
    for owner in (A, str(A), str(A).upper()):
        info = await runner.get_job_status(handle.job_id, tenant=owner)
        assert info is not None and info.status is JobStatus.QUEUED and info.tenant == A
    assert (await job_row(runner, handle.job_id))["status"] == "queued"
    assert await runner.cancel_job(handle.job_id, tenant=A) is True


async def test_same_job_id_space_per_tenant_and_worker_context(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    seen: dict[uuid.UUID, uuid.UUID] = {}
    gate = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        seen[ctx.job_id] = ctx.tenant
        await ctx.set_progress(10, "tenant work")
        async with ctx.step("s"):
            await gate.wait()
        return str(ctx.tenant)

    registry.add("who", handler)
    a = await runner.schedule_job("who", {}, tenant=A)
    b = await runner.schedule_job("who", {}, tenant=B)
    async with running_worker(runner):
        gate.set()
        ia = await runner.wait_for_job(a.job_id, tenant=A, timeout=30)
        ib = await runner.wait_for_job(b.job_id, tenant=B, timeout=30)
    assert seen == {a.job_id: A, b.job_id: B}
    assert ia.result == str(A) and ib.result == str(B)
    da = await runner.get_job_details(a.job_id, tenant=A)
    assert da is not None and {s.step_name for s in da.steps} == {"s", "attempt"}
    assert await runner.get_job_details(a.job_id, tenant=B) is None
    # cancelling in the wrong tenant never touches a finished job either
    assert await runner.cancel_job(b.job_id, tenant=A) is False


async def test_bulk_and_singletons_are_per_tenant(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("bulk", handler)
    handles = await runner.schedule_jobs("bulk", [{}, {}, {}], tenant=A)
    for h in handles:
        assert h.tenant == A
        assert await runner.get_job_status(h.job_id, tenant=B) is None
        assert await runner.get_job_status(h.job_id, tenant=A) is not None
    s1 = await runner.schedule_job("bulk", {}, tenant=A, singleton_key="nightly")
    s2 = await runner.schedule_job("bulk", {}, tenant=B, singleton_key="nightly")
    assert s1.created and s2.created and s1.job_id != s2.job_id


async def test_monitoring_and_schedule_methods_are_tenant_scoped(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        raise RuntimeError("always")

    from jobrunner import RetryPolicy

    registry.add("mon", handler, retry=RetryPolicy(max_attempts=1))
    queued = await runner.schedule_job("mon", {}, tenant=A)
    failing = await runner.schedule_job("mon", {}, tenant=A)
    assert await runner.cancel_job(queued.job_id, tenant=A)  # finished: cancelled
    async with running_worker(runner):
        info = await runner.wait_for_job(failing.job_id, tenant=A, timeout=30)
    assert info.status is JobStatus.FAILED

    # list_jobs / get_metrics see only the asking tenant's jobs
    page_b = await runner.list_jobs(tenant=B)
    assert page_b.jobs == []
    page_a = await runner.list_jobs(tenant=A)
    assert {j.job_id for j in page_a.jobs} == {queued.job_id, failing.job_id}
    assert (await runner.get_metrics(tenant=B)).total == 0
    assert (await runner.get_metrics(tenant=A)).total == 2
    # retry_job and clear_history cannot touch another tenant's jobs
    assert await runner.retry_job(failing.job_id, tenant=B) is False
    assert await runner.clear_history(tenant=B) == 0
    assert len((await runner.list_jobs(tenant=A)).jobs) == 2
    still = await runner.get_job_status(failing.job_id, tenant=A)
    assert still is not None and still.status is JobStatus.FAILED

    # recurring schedules
    sched = await runner.schedule_recurring_job("mon", {}, "0 3 * * *", tenant=A)
    assert [s.job_id for s in await runner.list_schedules(tenant=A)] == [sched.job_id]
    assert await runner.list_schedules(tenant=B) == []
    assert await runner.pause_schedule(sched.job_id, tenant=B) is False
    assert await runner.resume_schedule(sched.job_id, tenant=B) is False
    assert await runner.cancel_job(sched.job_id, tenant=B) is False
    (mine,) = await runner.list_schedules(tenant=A)
    assert mine.paused is False
    assert await runner.pause_schedule(sched.job_id, tenant=A) is True
