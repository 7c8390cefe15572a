"""SyncJobRunner: the same API as blocking calls, for sync host code."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import (
    HandlerNotFoundError,
    InvalidArgumentError,
    JobContext,
    JobHandlerRegistry,
    JobRunner,
    JobStatus,
    SyncJobRunner,
)
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

TENANT = uuid.UUID("33333333-3333-3333-3333-333333333333")


def test_method_names_match_async_runner() -> None:
    public = {n for n in vars(JobRunner) if not n.startswith("_")} - {
        "start",
        "close",
        "create_worker",
        "get_runner_type",
        "runner_type",
    }
    missing = {n for n in public if not callable(getattr(SyncJobRunner, n, None))}
    assert not missing, missing


async def test_sync_runner_round_trip(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return {"doubled": data["n"] * 2}

    registry.add("double", handler)
    sync = await asyncio.to_thread(
        SyncJobRunner,
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2),
    )
    try:
        assert sync.runner_type == "postgres"
        assert sync.is_healthy() is True
        handle = sync.schedule_job("double", {"n": 21}, tenant=TENANT, priority=3)
        assert isinstance(handle.job_id, uuid.UUID) and handle.tenant == TENANT
        later = sync.schedule_job_at(
            "double", {"n": 1}, datetime.now(UTC) + timedelta(hours=1), tenant=TENANT
        )
        bulk = sync.schedule_jobs("double", [{"n": 1}, {"n": 2}], tenant=TENANT)
        info = sync.get_job_status(handle.job_id, tenant=TENANT)
        assert info is not None and info.status is JobStatus.QUEUED and info.priority == 3
        assert sync.get_job_status(handle.job_id) is None  # system tenant: not found
        pending = sync.get_job_status(later.job_id, tenant=TENANT)
        assert pending is not None and pending.status is JobStatus.PENDING
        assert sync.cancel_job(later.job_id, tenant=TENANT) is True
        assert sync.cancel_job(later.job_id, tenant=TENANT) is False

        async with running_worker(runner):
            done = await asyncio.to_thread(
                sync.wait_for_job, handle.job_id, tenant=TENANT, timeout=30
            )
            for h in bulk:
                await asyncio.to_thread(sync.wait_for_job, h.job_id, tenant=TENANT, timeout=30)
        assert done.status is JobStatus.COMPLETED and done.result == {"doubled": 42}
        details = sync.get_job_details(handle.job_id, tenant=TENANT)
        assert details is not None and details.data == {"n": 21}

        with pytest.raises(InvalidArgumentError):
            sync.get_job_status("not-a-uuid")
        with pytest.raises(InvalidArgumentError):
            sync.schedule_job("double", {"x": {1, 2}})
        with pytest.raises(HandlerNotFoundError):
            sync.schedule_job("missing", {})
        with pytest.raises(TypeError):
            sync.schedule_job("double", {}, bogus=1)
    finally:
        await asyncio.to_thread(sync.close)
    await asyncio.to_thread(sync.close)  # idempotent


def test_context_manager(jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry) -> None:
    def handler(ctx: Any, data: dict[str, Any]) -> None:
        return None

    registry.add("s", handler)
    with SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=1)
    ) as sync:
        handle = sync.schedule_job("s")
        info = sync.get_job_status(handle.job_id)
        assert info is not None and info.status is JobStatus.QUEUED
    assert not sync._thread.is_alive()
