"""SyncJobRunner: the same API as blocking calls, for sync host code."""

from __future__ import annotations

import asyncio
import inspect
import threading
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


#: What only the sync runner has: a constructor from the environment's settings.
SYNC_ONLY = {"from_factory"}


def _public_methods(cls: type) -> dict[str, Any]:
    return {
        name: value
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and callable(value)
    }


def test_sync_runner_mirrors_every_public_method_of_the_async_runner() -> None:
    """Drift fails here: a method added to JobRunner must be added to SyncJobRunner with the
    same parameters (names, kinds, defaults), and the sync runner grows nothing else."""
    mine = _public_methods(SyncJobRunner)
    theirs = _public_methods(JobRunner)
    assert set(mine) - SYNC_ONLY == set(theirs), {
        "missing from SyncJobRunner": sorted(set(theirs) - set(mine)),
        "only in SyncJobRunner": sorted(set(mine) - set(theirs) - SYNC_ONLY),
    }
    for name, method in theirs.items():
        expected = [
            (p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()
        ]
        actual = [
            (p.name, p.kind, p.default) for p in inspect.signature(mine[name]).parameters.values()
        ]
        assert actual == expected, name
    # The context-manager protocol too, in its sync form.
    assert callable(SyncJobRunner.__enter__) and callable(SyncJobRunner.__exit__)
    assert SyncJobRunner.runner_type.__doc__  # a property mirroring JobRunner.runner_type


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


def test_get_runner_type_start_and_a_sync_worker(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    """The methods the sync runner lacked (issue 13): get_runner_type, start, create_worker."""
    from jobrunner._errors import UnknownOptionError
    from jobrunner._sync import SyncJobWorker

    async def handler(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return {"doubled": data["n"] * 2}

    registry.add("double", handler)
    with SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2)
    ) as sync:
        assert sync.get_runner_type() == "postgres" == sync.runner_type
        sync.start()  # idempotent: the constructor started it
        assert sync.is_healthy() is True
        worker = sync.create_worker(concurrency=2, queues=["default"], lease_seconds=10)
        assert isinstance(worker, SyncJobWorker)
        thread = threading.Thread(target=worker.run, name="sync-worker")
        thread.start()
        try:
            assert worker.started.wait(30)
            handle = sync.schedule_job("double", {"n": 21}, tenant=TENANT)
            info = sync.wait_for_job(handle.job_id, tenant=TENANT, timeout=30)
            assert info.status is JobStatus.COMPLETED and info.result == {"doubled": 42}
        finally:
            worker.stop(grace=5)
            thread.join(timeout=30)
        assert not thread.is_alive()
        with pytest.raises(InvalidArgumentError, match="bogus"):
            sync.create_worker(bogus=1)
        for call in (
            lambda: sync.list_jobs(bogus=1),
            lambda: sync.get_job_status(handle.job_id, bogus=1),
            lambda: sync.wait_for_job(handle.job_id, bogus=1),
            lambda: sync.schedule_recurring_job("double", {}, "5 minutes", bogus=1),
        ):
            with pytest.raises(UnknownOptionError, match="bogus"):
                call()
