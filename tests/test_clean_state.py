"""Clean state on every path (issue 13): what an attempt leaves behind when it ends without
finishing normally, on a real PostgreSQL.

- kill -9: the rescue closes the dead attempt's open step rows as failed (lease expired) and
  resets the progress of a job that goes back to the queue;
- graceful release at shutdown: progress reset, open steps closed;
- ``retry_job``: the previous run's cancel metadata is cleared (kept in the 'retry' row);
- a removed schedule's tracker says removed, not paused;
- every cancel statement bumps ``lease_token``, fencing the cancelled attempt's later writes,
  and closes its open steps.

The Temporal statements (``temporal.sql``) are run by hand on rows shaped as the Temporal
backend writes them; tests/temporal/ covers them through a Temporal server.
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from apps.helpers import details, fetch, job_row
from jobrunner import JobContext, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import InMemoryJobRunner, running_worker
from test_worker_process import worker_process

T1 = uuid.UUID("11111111-1111-1111-1111-111111111111")


async def local_step(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """This process's ``proc-step-block``: the step finishes at once."""
    async with ctx.step("upload"):
        await ctx.set_progress(50, "again")
    return {"attempt": ctx.attempt}


async def _held_in_step(runner: PostgresJobRunner, job_id: uuid.UUID, wp: Any) -> dict[str, Any]:
    """Wait until the subprocess's handler sits in its open ``upload`` step (progress 10)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        if wp.proc.returncode is not None:
            raise AssertionError(f"worker exited with {wp.proc.returncode}:\n{wp.output}")
        row = await job_row(runner, job_id)
        steps = await details(runner, job_id, "upload")
        if row["progress"] == 10 and [s["status"] for s in steps] == ["processing"]:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the subprocess never held the job: {row}")
        await asyncio.sleep(0.05)  # another process: no event reaches this one


async def _expire_lease(runner: PostgresJobRunner, job_id: uuid.UUID) -> None:
    """What waiting out the dead worker's lease would do, without the wait."""
    await fetch(
        runner,
        "UPDATE {schema}.jobs SET lease_expires_at = now() - interval '1 second' WHERE job_id = %s",
        job_id,
    )


async def _rescue(runner: PostgresJobRunner) -> list[dict[str, Any]]:
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.rescue_expired)
        return list(await cur.fetchall())


# -- kill -9 -------------------------------------------------------------------------------------
async def test_kill_9_rescue_closes_the_dead_attempts_steps_and_resets_progress(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    registry.add("proc-step-block", local_step, retry=RetryPolicy(max_attempts=3))
    handle = await runner.schedule_job("proc-step-block", {"release_file": None})
    async with worker_process(jobrunner_dsn, schema, "--lease", "60") as wp:
        held = await _held_in_step(runner, handle.job_id, wp)
        assert held["progress_message"].startswith("uploading")
        wp.proc.send_signal(signal.SIGKILL)
        assert await wp.wait() == -signal.SIGKILL
    await _expire_lease(runner, handle.job_id)
    rescued = await _rescue(runner)
    assert [r["job_id"] for r in rescued] == [handle.job_id]
    row = await job_row(runner, handle.job_id)
    assert row["status"] == "retrying"
    assert (row["progress"], row["progress_message"]) == (0, None)
    [step] = await details(runner, handle.job_id, "upload")
    assert step["status"] == "failed" and step["retry_count"] == 1
    assert step["result"]["type"] == "jobrunner.LeaseExpired"
    assert "lease expired" in step["result"]["message"]
    assert step["metadata"]["lease_expired"] is True and "finished_at" in step["metadata"]
    # The job then completes elsewhere; nothing of the dead attempt stays 'processing'.
    async with running_worker(runner):
        info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED and info.attempts == 2
    rows = await details(runner, handle.job_id)
    assert [r for r in rows if r["status"] == "processing"] == []
    assert [(r["status"], r["retry_count"]) for r in rows if r["step_name"] == "upload"] == [
        ("failed", 1),
        ("completed", 2),
    ]


async def test_rescue_of_a_final_attempt_keeps_its_progress(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """A job the rescue fails for good is not going back to the queue: how far it got stays."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def stuck(ctx: JobContext, data: dict[str, Any]) -> None:
        async with ctx.step("upload"):
            await ctx.set_progress(70, "most of it")
            started.set()
            await release.wait()

    registry.add("stuck", stuck, retry=RetryPolicy(max_attempts=1))
    handle = await runner.schedule_job("stuck", {})
    async with running_worker(runner, lease_seconds=60) as worker:
        await asyncio.wait_for(started.wait(), 30)
        # The worker loses the row as a killed one would: its lease is gone.
        await _expire_lease(runner, handle.job_id)
        await _rescue(runner)
        release.set()
        await worker.stop(grace=5)
    row = await job_row(runner, handle.job_id)
    assert row["status"] == "failed"
    assert (row["progress"], row["progress_message"]) == (70, "most of it")
    [step] = await details(runner, handle.job_id, "upload")
    assert step["status"] == "failed"
    assert step["result"]["type"] == "jobrunner.LeaseExpired"


# -- graceful release ------------------------------------------------------------------------------
async def test_release_at_shutdown_resets_progress_and_closes_steps(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    registry.add("proc-step-block", local_step)
    handle = await runner.schedule_job("proc-step-block", {"release_file": None})
    async with worker_process(jobrunner_dsn, schema, "--grace", "0.5") as wp:
        await _held_in_step(runner, handle.job_id, wp)
        wp.proc.send_signal(signal.SIGTERM)
        assert await wp.wait() == 0, wp.output
    assert "re-queued 1 unfinished jobs" in wp.output
    row = await job_row(runner, handle.job_id)
    assert row["status"] == "queued" and row["attempts"] == 0
    assert (row["progress"], row["progress_message"]) == (0, None)
    [step] = await details(runner, handle.job_id, "upload")
    assert step["status"] in ("cancelled", "failed"), step  # closed, by release or the handler


async def test_release_statement_itself_closes_open_steps(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """release_jobs on a row whose handler never got to close its step (no grace at all)."""
    started = asyncio.Event()

    async def hold(ctx: JobContext, data: dict[str, Any]) -> None:
        async with ctx.step("upload"):
            await ctx.set_progress(30, "a third")
            started.set()
            await asyncio.Event().wait()

    registry.add("hold", hold)
    handle = await runner.schedule_job("hold", {})
    async with running_worker(runner, lease_seconds=60):
        await asyncio.wait_for(started.wait(), 30)
        row = await job_row(runner, handle.job_id)
        # Release and park in one transaction: a worker that polls in between would otherwise
        # claim the released job again and its handler would write progress once more.
        async with runner.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                runner.db.queries.release_jobs,
                {
                    "tenants": [row["tenant"]],
                    "job_ids": [handle.job_id],
                    "tokens": [row["lease_token"]],
                    "channel": "jobrunner_test_nobody_listens",
                },
            )
            assert [r["job_id"] for r in await cur.fetchall()] == [handle.job_id]
            await conn.execute(
                sql.SQL("UPDATE {schema}.jobs SET queue = 'parked' WHERE job_id = %s").format(
                    schema=sql.Identifier(runner.schema)
                ),
                (handle.job_id,),
            )
        [step] = await details(runner, handle.job_id, "upload")
        assert step["status"] == "cancelled"
        assert step["result"]["type"] == "jobrunner.Released"
        released = await job_row(runner, handle.job_id)
        assert (released["progress"], released["progress_message"]) == (0, None)
        assert released["status"] == "queued"


# -- retry clears cancel metadata --------------------------------------------------------------
async def test_retry_clears_cancel_metadata_postgres(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def idle(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("idle", idle)
    handle = await runner.schedule_job("idle", {}, tenant=T1, queue="parked", metadata={"k": 1})
    assert await runner.cancel_job(handle.job_id, tenant=T1, reason="oops", cancelled_by="ops")
    cancelled = await runner.get_job_status(handle.job_id, tenant=T1)
    assert cancelled is not None
    assert cancelled.metadata["cancel_reason"] == "oops"
    assert cancelled.metadata["cancelled_by"] == "ops"
    assert await runner.retry_job(handle.job_id, tenant=T1)
    retried = await runner.get_job_status(handle.job_id, tenant=T1)
    assert retried is not None and retried.status is JobStatus.QUEUED
    assert "cancel_reason" not in retried.metadata and "cancelled_by" not in retried.metadata
    assert retried.metadata["k"] == 1 and retried.metadata["retried_count"] == 1
    assert retried.error is None and retried.progress == 0
    [history] = await details(runner, handle.job_id, "retry")
    assert history["metadata"]["cancel_reason"] == "oops"  # the history keeps it
    assert history["metadata"]["cancelled_by"] == "ops"


async def test_retry_clears_cancel_metadata_in_memory() -> None:
    registry = JobHandlerRegistry()

    async def idle(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("idle", idle)
    async with InMemoryJobRunner(registry=registry) as runner:
        handle = await runner.schedule_job("idle", {}, tenant=T1)
        assert await runner.cancel_job(handle.job_id, tenant=T1, reason="oops", cancelled_by="x")
        assert await runner.retry_job(handle.job_id, tenant=T1)
        info = await runner.get_job_status(handle.job_id, tenant=T1)
        assert info is not None
        assert "cancel_reason" not in info.metadata and "cancelled_by" not in info.metadata
        found = await runner.get_job_details(handle.job_id, tenant=T1)
        assert found is not None
        [history] = [s for s in found.steps if s.step_name == "retry"]
        assert history.metadata["cancel_reason"] == "oops"


async def _temporal_row(
    runner: PostgresJobRunner, status: str, *, metadata: dict[str, Any], token: int = 0
) -> uuid.UUID:
    """A jobs row as the Temporal backend writes it (no Temporal server needed for its SQL)."""
    job_id = uuid.uuid4()
    await fetch(
        runner,
        "INSERT INTO {schema}.jobs (tenant, job_id, type, metadata, status, created_at, "
        "user_id, runner_type, external_id, external_run_id, lease_token, attempts, started_at) "
        "VALUES (%s, %s, 'work', %s, %s, now(), %s, 'temporal', %s, 'run-1', %s, 1, now())",
        T1,
        job_id,
        Jsonb(metadata),
        status,
        uuid.UUID(int=0),
        f"job-work-{job_id}",
        token,
    )
    return job_id


async def test_temporal_retry_clears_cancel_metadata(runner: PostgresJobRunner) -> None:
    job_id = await _temporal_row(
        runner, "cancelled", metadata={"cancel_reason": "oops", "cancelled_by": "ops", "k": 1}
    )
    await fetch(
        runner,
        "UPDATE {schema}.jobs SET progress = 40, progress_message = 'x' WHERE job_id = %s",
        job_id,
    )
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.temporal_reset_for_retry, {"tenant": T1, "job_id": job_id}
        )
        assert (await cur.fetchone()) is not None
    row = await job_row(runner, job_id)
    assert row["status"] == "queued" and row["metadata"] == {"k": 1}
    assert (row["progress"], row["progress_message"]) == (0, None)


async def test_temporal_new_attempt_closes_the_abandoned_attempts_steps(
    runner: PostgresJobRunner,
) -> None:
    """Temporal timed out an attempt whose worker died mid-step: the next attempt's start
    closes that step and starts its own progress from 0."""
    job_id = await _temporal_row(runner, "processing", metadata={}, token=3)
    await fetch(
        runner,
        "UPDATE {schema}.jobs SET progress = 60, progress_message = 'x' WHERE job_id = %s",
        job_id,
    )
    await fetch(
        runner,
        "INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at, "
        "retry_count, metadata) VALUES (%s, %s, 'upload', 'processing', now(), 1, '{{}}')",
        T1,
        job_id,
    )
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.temporal_begin_attempt,
            {
                "tenant": T1,
                "job_id": job_id,
                "attempt": 2,
                "max_attempts": 3,
                "worker_id": uuid.uuid4(),
                "workflow_id": f"job-work-{job_id}",
                "run_id": "run-1",
            },
        )
        begun = await cur.fetchone()
    assert begun is not None and begun["lease_token"] == 4
    row = await job_row(runner, job_id)
    assert (row["progress"], row["progress_message"]) == (0, None)
    [step] = await details(runner, job_id, "upload")
    assert step["status"] == "failed" and step["result"]["type"] == "jobrunner.LeaseExpired"


# -- removed schedules ---------------------------------------------------------------------------
async def test_removed_schedule_says_removed_not_paused_postgres(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("tick", tick)
    for pause_first in (False, True):
        sched = await runner.schedule_recurring_job(
            "tick", {}, "0 3 * * *", tenant=T1, singleton_key=f"nightly-{pause_first}"
        )
        if pause_first:
            assert await runner.pause_schedule(sched.job_id, tenant=T1)
            paused = await runner.get_job_status(sched.job_id, tenant=T1)
            assert paused is not None and paused.metadata["paused"] is True
        assert await runner.cancel_job(sched.job_id, tenant=T1, reason="gone")
        info = await runner.get_job_status(sched.job_id, tenant=T1)
        assert info is not None and info.status is JobStatus.CANCELLED
        meta = info.metadata
        assert meta["schedule_removed"] is True and meta["paused"] is False
        assert meta["next_run_at"] is None and meta["removed_at"]
        assert meta["cancel_reason"] == "gone"
    assert await runner.list_schedules(tenant=T1) == []


async def test_removed_schedule_says_removed_not_paused_in_memory() -> None:
    registry = JobHandlerRegistry()

    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("tick", tick)
    async with InMemoryJobRunner(registry=registry) as runner:
        sched = await runner.schedule_recurring_job("tick", {}, "0 3 * * *", tenant=T1)
        assert await runner.pause_schedule(sched.job_id, tenant=T1)
        assert await runner.cancel_job(sched.job_id, tenant=T1)
        info = await runner.get_job_status(sched.job_id, tenant=T1)
        assert info is not None
        assert info.metadata["schedule_removed"] is True and info.metadata["paused"] is False


async def test_removed_schedule_says_removed_not_paused_temporal_sql(
    runner: PostgresJobRunner,
) -> None:
    tracker = await _temporal_row(
        runner, "active", metadata={"kind": "temporal_schedule", "paused": True}
    )
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.temporal_cancel_tracker,
            {"tenant": T1, "job_id": tracker, "reason": "gone", "cancelled_by": None},
        )
        assert (await cur.fetchone()) is not None
    meta = (await job_row(runner, tracker))["metadata"]
    assert meta["schedule_removed"] is True and meta["paused"] is False
    assert meta["next_run_at"] is None and meta["removed_at"]


# -- cancel fences the cancelled attempt --------------------------------------------------------
def _named_queries() -> dict[str, str]:
    found: dict[str, str] = {}
    folder = resources.files("jobrunner._sql").joinpath("queries")
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        for match in re.finditer(r"^-- name: (\w+)\n(.*?)(?=^-- name: |\Z)", text, re.M | re.S):
            found[f"{Path(entry.name).stem}.{match[1]}"] = match[2]
    return found


def test_every_cancel_of_a_job_that_may_be_running_bumps_the_lease_token() -> None:
    """A cancel must fence the cancelled attempt's later writes: each statement that moves a
    live job (pending, queued, processing, retrying) to 'cancelled' bumps lease_token. Removing
    a schedule's tracker ('active', never running) is the only other cancel."""
    cancels = {
        name: text
        for name, text in _named_queries().items()
        if re.search(r"UPDATE \{schema\}\.jobs(\s+\w+)?\s+SET\s+status\s*=\s*'cancelled'", text)
    }
    live_cancels = {n: t for n, t in cancels.items() if "'processing'" in t}
    assert {"jobs.cancel_job", "temporal.temporal_finish_cancelled"} <= set(live_cancels)
    for name, text in live_cancels.items():
        assert re.search(r"lease_token\s*=\s*\w*\.?lease_token\s*\+\s*1", text), name
    for name in set(cancels) - set(live_cancels):
        assert "status = 'active'" in cancels[name], f"{name}: cancels something else"


async def test_cancel_fences_the_running_attempt_and_closes_its_steps(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    started = asyncio.Event()

    async def hold(ctx: JobContext, data: dict[str, Any]) -> None:
        async with ctx.step("upload"):
            started.set()
            await asyncio.Event().wait()

    registry.add("hold", hold)
    handle = await runner.schedule_job("hold", {}, tenant=T1)
    async with running_worker(runner, lease_seconds=60):
        await asyncio.wait_for(started.wait(), 30)
        before = await job_row(runner, handle.job_id)
        assert await runner.cancel_job(handle.job_id, tenant=T1, reason="stop")
        after = await job_row(runner, handle.job_id)
        assert after["lease_token"] == before["lease_token"] + 1
        # a late write of the cancelled attempt (its old token) changes nothing
        async with runner.db.connection() as conn:
            cur = await conn.execute(
                runner.db.queries.save_progress,
                {
                    "tenant": T1,
                    "job_id": handle.job_id,
                    "token": before["lease_token"],
                    "progress": 99,
                    "message": "late",
                },
            )
            assert cur.rowcount == 0
    [step] = await details(runner, handle.job_id, "upload")
    assert step["status"] == "cancelled" and step["result"]["message"] == "stop"
    assert (await job_row(runner, handle.job_id))["status"] == "cancelled"


async def test_temporal_cancel_bumps_the_token_and_closes_steps(
    runner: PostgresJobRunner,
) -> None:
    job_id = await _temporal_row(runner, "processing", metadata={}, token=5)
    await fetch(
        runner,
        "INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at, "
        "retry_count, metadata) VALUES (%s, %s, 'upload', 'processing', now(), 1, '{{}}')",
        T1,
        job_id,
    )
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.temporal_finish_cancelled,
            {
                "tenant": T1,
                "job_id": job_id,
                "run_id": "run-1",
                "reason": "stop",
                "cancelled_by": "ops",
            },
        )
        assert (await cur.fetchone()) is not None
    row = await job_row(runner, job_id)
    assert row["status"] == "cancelled" and row["lease_token"] == 6
    [step] = await details(runner, job_id, "upload")
    assert step["status"] == "cancelled"


@pytest.mark.parametrize("query", ["cancel_job"])
async def test_cancel_job_of_a_temporal_row_bumps_the_token(
    runner: PostgresJobRunner, query: str
) -> None:
    """The Temporal runner's cancel_job runs jobs.sql's cancel_job on its rows."""
    job_id = await _temporal_row(runner, "processing", metadata={}, token=7)
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            getattr(runner.db.queries, query),
            {
                "tenant": T1,
                "job_id": job_id,
                "reason": None,
                "cancelled_by": None,
                "runner_type": "temporal",
                "channel": "jobrunner_test_nobody_listens",
            },
        )
        assert (await cur.fetchone()) is not None
    assert (await job_row(runner, job_id))["lease_token"] == 8
