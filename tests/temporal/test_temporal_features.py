"""What only the Temporal backend has: signals and the query, Temporal Schedules, fallback and
health checks."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.service import RPCError

from apps.helpers import eventually, fetch
from jobrunner import (
    JobContext,
    JobHandlerRegistry,
    JobRunnerFactory,
    JobStatus,
    ScheduleError,
    UnavailableError,
)
from jobrunner._config import Settings
from jobrunner.backends.postgres import PostgresJobRunner
from temporal._support import free_port_address

pytestmark = pytest.mark.temporal


async def test_signals_and_query(trunner: Any, tworker: Any, registry: JobHandlerRegistry) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def hold(ctx: JobContext, data: dict[str, Any]) -> None:
        await ctx.set_progress(20, "handler says")
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise

    registry.add("hold", hold)
    tenant = uuid.uuid4()
    handle = await trunner.schedule_job("hold", {}, tenant=tenant)
    await asyncio.wait_for(started.wait(), 60)
    wf = trunner.client.get_workflow_handle(handle.external_id)

    # The handler's own progress is in the row and mirrored into the workflow's state.
    state = await eventually(
        lambda: wf.query("getJobState"), lambda st: st["progress"] == 20, what="mirrored progress"
    )
    assert state["step"] == "running"
    assert state["message"] == "handler says"
    assert state["started_at"]
    assert state["completed_at"] is None
    assert state["error"] is None

    await wf.signal("updateProgress", {"progress": 55, "message": "halfway"})
    info = await eventually(
        lambda: trunner.get_job_status(handle.job_id, tenant=tenant),
        lambda i: i.progress == 55,
        what="signalled progress",
    )
    assert info.progress_message == "halfway"
    assert info.status is JobStatus.PROCESSING
    assert (await wf.query("getJobState"))["progress"] == 55
    # The runner's own helpers go through the same signal and query, tenant-scoped.
    assert await trunner.update_progress(handle.job_id, 60, "more", tenant=tenant) is True
    assert await trunner.update_progress(handle.job_id, 61, tenant=uuid.uuid4()) is False
    assert await trunner.get_job_state(handle.job_id, tenant=uuid.uuid4()) is None
    await eventually(
        lambda: trunner.get_job_status(handle.job_id, tenant=tenant),
        lambda i: i.progress == 60,
        what="progress 60",
    )

    await wf.signal("cancelJob", {"reason": "user asked", "cancelled_by": "alice"})
    await asyncio.wait_for(stopped.wait(), 30)
    info = await eventually(
        lambda: trunner.get_job_status(handle.job_id, tenant=tenant),
        lambda i: i.status is JobStatus.CANCELLED,
        what="cancelled",
    )
    assert info.metadata["cancel_reason"] == "user asked"
    assert info.metadata["cancelled_by"] == "alice"
    state = await trunner.get_job_state(handle.job_id, tenant=tenant)
    assert state["step"] == "cancelled"
    assert state["completed_at"]
    assert state["error"] == {"type": "cancelled", "message": "user asked"}


async def test_schedule_created_updated_paused_cancelled(
    trunner: Any, tworker: Any, registry: JobHandlerRegistry
) -> None:
    seen: list[dict[str, Any]] = []

    async def tick(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data)
        return {"schedule": str(ctx.schedule_id)}

    registry.add("tick", tick)
    tenant = uuid.uuid4()
    created = await trunner.schedule_recurring_job(
        "tick", {"v": 1}, "0 3 * * *", tenant=tenant, timezone="Europe/Paris"
    )
    assert created.created
    assert created.external_id == f"recurring-tick-{tenant}"
    sched = trunner.client.get_schedule_handle(created.external_id)
    desc = await sched.describe()
    # Temporal stores a cron expression as a structured calendar.
    [calendar] = desc.schedule.spec.calendars
    assert [(r.start, r.end) for r in calendar.hour] == [(3, 3)]
    assert desc.schedule.spec.time_zone_name == "Europe/Paris"
    tracker = await trunner.get_job_status(created.job_id, tenant=tenant)
    assert tracker.status is JobStatus.ACTIVE
    assert tracker.runner_type == "temporal"
    assert tracker.metadata["expression"] == "0 3 * * *"

    # Fire it now: the run gets its own row linked to the tracker.
    await sched.trigger()
    run = await eventually(
        lambda: fetch(
            trunner, "SELECT * FROM {schema}.jobs WHERE schedule_id = %s", created.job_id
        ),
        lambda rows: len(rows) == 1 and rows[0]["status"] == "completed",
        what="first run",
    )
    assert run[0]["tenant"] == tenant
    assert run[0]["result"] == {"schedule": str(created.job_id)}
    assert run[0]["external_id"].startswith(f"job-tick-{created.external_id}")

    # Calling again updates the same schedule in place, data and expression included.
    updated = await trunner.schedule_recurring_job("tick", {"v": 2}, "24 hours", tenant=tenant)
    assert not updated.created
    assert updated.job_id == created.job_id
    assert updated.external_id == created.external_id
    desc = await sched.describe()
    assert desc.schedule.spec.intervals[0].every.total_seconds() == 86400
    assert desc.schedule.spec.calendars == []
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    rows = await fetch(trunner, "SELECT count(*) AS n FROM {schema}.jobs WHERE status = 'active'")
    assert rows[0]["n"] == 1
    await sched.trigger()
    await eventually(lambda: asyncio.sleep(0, seen), lambda s: len(s) == 2, what="second run")
    assert seen == [{"v": 1}, {"v": 2}]

    [info] = await trunner.list_schedules(tenant=tenant)
    assert info.job_id == created.job_id
    assert info.expression == "24 hours"
    assert info.data == {"v": 2}
    assert not info.paused
    assert info.next_run_at is not None
    assert info.last_run_status in (JobStatus.COMPLETED, JobStatus.QUEUED, JobStatus.PROCESSING)
    assert await trunner.list_schedules(tenant=uuid.uuid4()) == []

    assert await trunner.pause_schedule(created.job_id, tenant=uuid.uuid4()) is False
    assert await trunner.pause_schedule(created.job_id, tenant=tenant) is True
    assert (await sched.describe()).schedule.state.paused
    [info] = await trunner.list_schedules(tenant=tenant)
    assert info.paused
    # Updating a paused schedule keeps it paused.
    await trunner.schedule_recurring_job("tick", {"v": 3}, "12 hours", tenant=tenant)
    assert (await sched.describe()).schedule.state.paused
    assert await trunner.resume_schedule(created.job_id, tenant=tenant) is True
    assert not (await sched.describe()).schedule.state.paused

    assert await trunner.cancel_job(created.job_id, tenant=uuid.uuid4()) is False
    assert await trunner.cancel_job(created.job_id, tenant=tenant) is True
    with pytest.raises(RPCError):
        await sched.describe()
    tracker = await trunner.get_job_status(created.job_id, tenant=tenant)
    assert tracker.status is JobStatus.CANCELLED
    assert await trunner.list_schedules(tenant=tenant) == []
    assert await trunner.cancel_job(created.job_id, tenant=tenant) is False


async def test_schedule_keys_and_bad_expressions(
    trunner: Any, registry: JobHandlerRegistry
) -> None:
    async def job(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("keyed", job)
    key = f"nightly-{uuid.uuid4().hex[:6]}"
    owner = uuid.uuid4()
    made = await trunner.schedule_recurring_job(
        "keyed", {}, "@daily", tenant=owner, singleton_key=key
    )
    assert made.external_id == key
    with pytest.raises(ScheduleError):
        await trunner.schedule_recurring_job(
            "keyed", {}, "@daily", tenant=uuid.uuid4(), singleton_key=key
        )
    for bad in ("every tuesday", "61 * * * *", "0 seconds", ""):
        with pytest.raises(ScheduleError):
            await trunner.schedule_recurring_job("keyed", {}, bad, tenant=owner)
    with pytest.raises(ScheduleError):
        await trunner.schedule_recurring_job("keyed", {}, "@daily", timezone="Mars/Base")
    assert await trunner.cancel_job(made.job_id, tenant=owner) is True


async def test_is_healthy(trunner: Any, jobrunner_dsn: str, schema: str) -> None:
    from jobrunner.backends.temporal import TemporalJobRunner

    assert await trunner.is_healthy() is True
    unreachable = TemporalJobRunner(
        jobrunner_dsn, schema=schema, address=free_port_address(), connect_timeout=1.0
    )
    try:
        assert await unreachable.is_healthy() is False
    finally:
        await unreachable.close()


@pytest.mark.parametrize(
    "variable", ["JOB_RUNNER_FALLBACK_TO_PGBOSS", "JOB_RUNNER_FALLBACK_TO_POSTGRES"]
)
async def test_fallback_to_postgres_when_unreachable(
    jobrunner_dsn: str, schema: str, caplog: pytest.LogCaptureFixture, variable: str
) -> None:
    address = free_port_address()
    settings = Settings.from_env(
        {
            "JOB_RUNNER_TYPE": "temporal",
            "TEMPORAL_ADDRESS": address,
            variable: "true",
            "JOBRUNNER_DATABASE_URL": jobrunner_dsn,
            "JOBRUNNER_SCHEMA": schema,
            "JOBRUNNER_TEMPORAL_CONNECT_TIMEOUT": "2",
        }
    )
    with caplog.at_level(logging.WARNING, logger="jobrunner.factory"):
        runner = await JobRunnerFactory.create(settings, registry=JobHandlerRegistry())
    try:
        assert isinstance(runner, PostgresJobRunner)
        assert runner.get_runner_type() == "postgres"
    finally:
        await runner.close()
    assert any(
        address in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records
    )


async def test_no_fallback_raises_naming_the_address(jobrunner_dsn: str, schema: str) -> None:
    address = free_port_address()
    settings = Settings.from_env(
        {
            "JOB_RUNNER_TYPE": "temporal",
            "TEMPORAL_ADDRESS": address,
            "JOB_RUNNER_FALLBACK_TO_PGBOSS": "false",
            "JOBRUNNER_DATABASE_URL": jobrunner_dsn,
            "JOBRUNNER_SCHEMA": schema,
            "JOBRUNNER_TEMPORAL_CONNECT_TIMEOUT": "2",
        }
    )
    with pytest.raises(UnavailableError, match=address):
        await JobRunnerFactory.create(settings, registry=JobHandlerRegistry())


async def test_factory_builds_the_temporal_runner(
    jobrunner_dsn: str, schema: str, temporal_address: str
) -> None:
    from jobrunner.backends.temporal import TemporalJobRunner

    settings = Settings.from_env(
        {
            "JOB_RUNNER_TYPE": "temporal",
            "TEMPORAL_ADDRESS": temporal_address,
            "TEMPORAL_JOB_TASK_QUEUE": "factory-test",
            "JOB_RUNNER_FALLBACK_TO_PGBOSS": "false",
            "JOBRUNNER_DATABASE_URL": jobrunner_dsn,
            "JOBRUNNER_SCHEMA": schema,
        }
    )
    runner = await JobRunnerFactory.create(settings, registry=JobHandlerRegistry())
    try:
        assert isinstance(runner, TemporalJobRunner)
        assert runner.get_runner_type() == "temporal"
        assert runner.task_queue == "factory-test"
        assert await runner.is_healthy()
    finally:
        await runner.close()


async def test_transactional_connection_is_refused(
    trunner: Any, registry: JobHandlerRegistry
) -> None:
    from jobrunner import InvalidArgumentError

    async def job(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("tx", job)
    async with trunner.db.connection() as conn:
        with pytest.raises(InvalidArgumentError, match="connection"):
            await trunner.schedule_job("tx", {}, connection=conn)
        with pytest.raises(InvalidArgumentError, match="connection"):
            await trunner.schedule_jobs("tx", [{}], connection=conn)
    rows = await fetch(trunner, "SELECT count(*) AS n FROM {schema}.jobs")
    assert rows[0]["n"] == 0


@pytest.mark.parametrize(
    "options",
    [{"grace": 0.3, "shutdown_grace": 0.3}, {"grace": 0.0}],
    ids=["sdk-grace", "forced-stop"],
)
async def test_worker_stop_past_grace_retries_the_job_elsewhere(
    trunner: Any, registry: JobHandlerRegistry, options: dict[str, float]
) -> None:
    from jobrunner import RetryPolicy
    from jobrunner.testing import running_worker

    started = asyncio.Event()

    async def patient(ctx: JobContext, data: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            started.set()
            await asyncio.Event().wait()
        return ctx.attempt

    registry.add(
        "patient", patient, retry=RetryPolicy(max_attempts=3, initial_interval=0.1, jitter=0.0)
    )
    async with running_worker(trunner, **options):
        handle = await trunner.schedule_job("patient", {})
        await asyncio.wait_for(started.wait(), 60)
    # The interrupted attempt is a failed attempt to retry, not a cancelled job.
    info = await eventually(
        lambda: trunner.get_job_status(handle.job_id),
        lambda i: i.status is not JobStatus.PROCESSING,
        what="released",
    )
    assert info.status is JobStatus.RETRYING
    async with running_worker(trunner):
        info = await trunner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == 2
