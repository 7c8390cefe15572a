"""Conformance: ``clear_history`` removes what docs/monitoring.md says and nothing else, the
same on every backend: finished jobs (``scope="finished"``: completed; ``"all"``: completed,
failed, cancelled) of the tenant, older than ``older_than``; never a live job or a live
schedule; a job's steps go with it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import (
    ALL_TENANTS,
    InvalidArgumentError,
    JobContext,
    JobStatus,
    NonRetryable,
    ScheduledJob,
)

from .conftest import Backend, eventually


async def _history(backend: Backend, tenant: uuid.UUID) -> dict[str, ScheduledJob]:
    """One job of the tenant in each state a clear must tell apart."""

    async def ok(ctx: JobContext, data: dict[str, Any]) -> str:
        async with ctx.step("only"):
            pass
        return "done"

    async def broken(ctx: JobContext, data: dict[str, Any]) -> None:
        raise NonRetryable("no")

    backend.registry.add("ok", ok)
    backend.registry.add("broken", broken)
    backend.registry.add("idle", ok)
    runner = backend.runner
    jobs = {
        "completed": await runner.schedule_job("ok", tenant=tenant),
        "failed": await runner.schedule_job("broken", tenant=tenant),
        "cancelled": await runner.schedule_job("idle", tenant=tenant),
    }
    assert await runner.cancel_job(jobs["cancelled"].job_id, tenant=tenant)
    infos = await backend.run(jobs["completed"], jobs["failed"])
    assert [i.status for i in infos] == [JobStatus.COMPLETED, JobStatus.FAILED]
    jobs["pending"] = await runner.schedule_job_at(
        "idle", {}, _later(), tenant=tenant, singleton_key="later"
    )
    jobs["schedule"] = await runner.schedule_recurring_job("ok", {}, "1 days", tenant=tenant)
    return jobs


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


async def _statuses(
    backend: Backend, jobs: dict[str, ScheduledJob], tenant: uuid.UUID
) -> dict[str, JobStatus | None]:
    found = {}
    for what, handle in jobs.items():
        info = await backend.runner.get_job_status(handle.job_id, tenant=tenant)
        found[what] = None if info is None else info.status
    return found


async def test_finished_scope_removes_completed_jobs_only(backend: Backend) -> None:
    tenant = uuid.uuid4()
    jobs = await _history(backend, tenant)
    assert await backend.runner.clear_history(tenant=tenant) == 1  # scope="finished"
    assert await _statuses(backend, jobs, tenant) == {
        "completed": None,
        "failed": JobStatus.FAILED,
        "cancelled": JobStatus.CANCELLED,
        "pending": JobStatus.PENDING,
        "schedule": JobStatus.ACTIVE,
    }
    assert await backend.runner.get_job_details(jobs["completed"].job_id, tenant=tenant) is None
    assert await backend.runner.clear_history(tenant=tenant) == 0  # nothing left to remove


async def test_all_scope_removes_every_finished_job_but_never_a_live_one(
    backend: Backend,
) -> None:
    tenant = uuid.uuid4()
    jobs = await _history(backend, tenant)
    assert await backend.runner.clear_history(tenant=tenant, scope="all") == 3
    assert await _statuses(backend, jobs, tenant) == {
        "completed": None,
        "failed": None,
        "cancelled": None,
        "pending": JobStatus.PENDING,
        "schedule": JobStatus.ACTIVE,
    }
    [schedule] = await backend.runner.list_schedules(tenant=tenant)
    assert schedule.job_id == jobs["schedule"].job_id  # the schedule still works


async def test_a_clear_is_scoped_to_its_tenant_unless_all_tenants(backend: Backend) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    my_jobs = await _history(backend, mine)
    their_jobs = await _history(backend, theirs)
    assert await backend.runner.clear_history(tenant=mine, scope="all") == 3
    assert (await _statuses(backend, their_jobs, theirs))["completed"] is JobStatus.COMPLETED
    assert await backend.runner.clear_history(tenant=ALL_TENANTS, scope="all") >= 3
    assert await _statuses(backend, their_jobs, theirs) == {
        "completed": None,
        "failed": None,
        "cancelled": None,
        "pending": JobStatus.PENDING,
        "schedule": JobStatus.ACTIVE,
    }
    assert (await _statuses(backend, my_jobs, mine))["pending"] is JobStatus.PENDING


async def test_older_than_keeps_what_finished_more_recently(backend: Backend) -> None:
    tenant = uuid.uuid4()
    jobs = await _history(backend, tenant)
    assert await backend.runner.clear_history(tenant=tenant, older_than=timedelta(days=1)) == 0
    assert await backend.runner.clear_history(tenant=tenant, scope="all", older_than=3600) == 0
    assert (await _statuses(backend, jobs, tenant))["completed"] is JobStatus.COMPLETED
    # Once the jobs are older than older_than, they go.
    backend.let_time_pass(timedelta(seconds=5))
    removed = 0

    async def clear_old() -> int:
        nonlocal removed
        removed += await backend.runner.clear_history(tenant=tenant, scope="all", older_than=0.5)
        return removed

    assert await eventually(clear_old, lambda n: n >= 3, what="jobs older than 0.5 s") == 3
    assert (await _statuses(backend, jobs, tenant))["pending"] is JobStatus.PENDING


@pytest.mark.parametrize(
    "arguments",
    [{"scope": "everything"}, {"scope": None}, {"older_than": -1}, {"older_than": "1 day"}],
    ids=["unknown scope", "no scope", "negative age", "age as text"],
)
async def test_bad_arguments_are_refused_and_nothing_is_removed(
    backend: Backend, arguments: dict[str, Any]
) -> None:
    tenant = uuid.uuid4()
    jobs = await _history(backend, tenant)
    with pytest.raises(InvalidArgumentError):
        await backend.runner.clear_history(tenant=tenant, **arguments)
    assert (await _statuses(backend, jobs, tenant))["completed"] is JobStatus.COMPLETED


async def test_a_running_job_survives_a_clear(backend: Backend) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold(ctx: JobContext, data: dict[str, Any]) -> None:
        started.set()
        await release.wait()

    backend.registry.add("hold", hold)
    async with backend.worker():
        handle = await backend.runner.schedule_job("hold")
        await asyncio.wait_for(started.wait(), 30)
        assert await backend.runner.clear_history(scope="all", tenant=ALL_TENANTS) == 0
        info = await backend.runner.get_job_status(handle.job_id)
        assert info is not None
        assert info.status is JobStatus.PROCESSING
        release.set()
        done = await backend.runner.wait_for_job(handle.job_id, timeout=30)
    assert done.status is JobStatus.COMPLETED
