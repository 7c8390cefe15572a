"""The seed's legacy JobScheduler API, thin over the runner."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry, JobRunnerFactory, JobScheduler, JobStatus
from jobrunner.backends.postgres import PostgresJobRunner

T1 = uuid.UUID("44444444-4444-4444-4444-444444444444")
T2 = uuid.UUID("55555555-5555-5555-5555-555555555555")


async def handler(ctx: Any, data: dict[str, Any]) -> None:
    return None


@pytest.fixture
async def scheduler(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> AsyncIterator[JobScheduler]:
    registry.add("legacy-job", handler)
    JobRunnerFactory.set_instance(runner)
    try:
        yield await JobScheduler.get_instance()
    finally:
        JobRunnerFactory.set_instance(None)


async def test_get_instance_wraps_factory_runner(
    scheduler: JobScheduler, runner: PostgresJobRunner
) -> None:
    assert scheduler.runner is runner
    assert await JobScheduler.get_instance() is scheduler


async def test_immediate_job_tenant_from_data(
    scheduler: JobScheduler, runner: PostgresJobRunner
) -> None:
    snake = await scheduler.schedule_immediate_job("legacy-job", {"tenant_id": str(T1), "x": 1})
    camel = await scheduler.schedule_immediate_job("legacy-job", {"tenantId": str(T2)})
    system = await scheduler.schedule_immediate_job("legacy-job", {"x": 2})
    bare = await scheduler.schedule_immediate_job("legacy-job")
    for job_id in (snake, camel, system, bare):
        assert isinstance(job_id, uuid.UUID)
    info = await runner.get_job_status(snake, tenant=T1)
    assert info is not None and info.status is JobStatus.QUEUED
    assert await runner.get_job_status(snake) is None
    assert await runner.get_job_status(camel, tenant=T2) is not None
    assert await runner.get_job_status(system) is not None
    assert await runner.get_job_status(bare) is not None


async def test_scheduled_job(scheduler: JobScheduler, runner: PostgresJobRunner) -> None:
    run_at = datetime.now(UTC) + timedelta(minutes=30)
    job_id = await scheduler.schedule_scheduled_job("legacy-job", run_at, {"tenantId": str(T1)})
    info = await runner.get_job_status(job_id, tenant=T1)
    assert info is not None and info.status is JobStatus.PENDING and info.run_at == run_at
