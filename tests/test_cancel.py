"""Cancellation of queued, delayed and running jobs (async and sync handlers), finished jobs,
and fencing: a cancelled attempt can no longer write anything."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from apps.helpers import details, eventually, fetch, job_row
from jobrunner import JobContext, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner._queue._store import AttemptRef, CompletedAttempt, FailedAttempt
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._store import completed_params, failed_params
from jobrunner.testing import running_worker

# A long safety poll: a running handler can only learn of a cancel through NOTIFY.
SLOW_POLL = {"poll_interval": 60.0}


async def wait_processing(runner: PostgresJobRunner, job_id: uuid.UUID) -> dict[str, Any]:
    return await eventually(
        lambda: job_row(runner, job_id),
        lambda r: r["status"] == "processing",
        what="processing",
    )


async def test_cancel_queued_job(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> None:
    ran: list[uuid.UUID] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        ran.append(ctx.job_id)

    registry.add("c", handler)
    tenant = uuid.uuid4()
    handle = await runner.schedule_job("c", {}, tenant=tenant)
    assert (
        await runner.cancel_job(
            handle.job_id, tenant=tenant, reason="not needed", cancelled_by="admin@example.com"
        )
        is True
    )
    info = await runner.get_job_status(handle.job_id, tenant=tenant)
    assert info is not None and info.status is JobStatus.CANCELLED
    assert info.completed_at is not None
    assert info.metadata["cancel_reason"] == "not needed"
    assert info.metadata["cancelled_by"] == "admin@example.com"
    assert await runner.cancel_job(handle.job_id, tenant=tenant) is False
    async with running_worker(runner):
        other = await runner.schedule_job("c", {}, tenant=tenant)
        await runner.wait_for_job(other.job_id, tenant=tenant, timeout=30)
    assert ran == [other.job_id]
    final = await runner.get_job_status(handle.job_id, tenant=tenant)
    assert final is not None and final.status is JobStatus.CANCELLED and final.attempts == 0


async def test_cancel_delayed_job(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("later", handler)
    handle = await runner.schedule_job_at("later", {}, datetime.now(UTC) + timedelta(hours=1))
    assert await runner.cancel_job(handle.job_id) is True
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.CANCELLED


async def test_cancel_waiting_retry(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        raise RuntimeError("fails")

    registry.add("retrying", handler, retry=RetryPolicy(initial_interval=60, max_interval=60))
    async with running_worker(runner):
        handle = await runner.schedule_job("retrying", {})
        await eventually(
            lambda: job_row(runner, handle.job_id),
            lambda r: r["status"] == "retrying",
            what="retrying",
        )
        assert await runner.cancel_job(handle.job_id) is True
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.CANCELLED and info.attempts == 1


async def test_cancel_running_async_handler(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    started = asyncio.Event()
    got_cancelled = asyncio.Event()
    after: list[str] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        if data.get("block"):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                got_cancelled.set()
                raise
        after.append("ran")
        return "ok"

    registry.add("long", handler)
    async with running_worker(runner, concurrency=1, **SLOW_POLL):
        handle = await runner.schedule_job("long", {"block": True})
        await asyncio.wait_for(started.wait(), 30)
        await wait_processing(runner, handle.job_id)
        assert await runner.cancel_job(handle.job_id, reason="user asked") is True
        # Delivered by NOTIFY; generous bound for a loaded machine (typically milliseconds).
        await asyncio.wait_for(got_cancelled.wait(), 10)
        info = await runner.get_job_status(handle.job_id)
        assert info is not None and info.status is JobStatus.CANCELLED
        # the slot is free again: with concurrency=1 the next job runs
        nxt = await runner.schedule_job("long", {})
        assert (await runner.wait_for_job(nxt.job_id, timeout=30)).result == "ok"
    final = await runner.get_job_status(handle.job_id)
    assert final is not None and final.status is JobStatus.CANCELLED
    assert final.result is None and final.attempts == 1
    rows = await details(runner, handle.job_id, "attempt")
    assert [(r["status"], r["retry_count"]) for r in rows] == [("cancelled", 1)]
    assert await runner.cancel_job(handle.job_id) is False


async def test_cancel_running_sync_handler(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()
    returned = threading.Event()

    def handler(ctx: Any, data: dict[str, Any]) -> str:
        try:
            started.set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if ctx.is_cancelled():
                    saw_cancel.set()
                    break
                time.sleep(0.01)
            return "late result"
        finally:
            returned.set()

    registry.add("sync-long", handler)
    async with running_worker(runner, **SLOW_POLL):
        handle = await runner.schedule_job("sync-long", {})
        assert await asyncio.to_thread(started.wait, 30)
        await wait_processing(runner, handle.job_id)
        assert await runner.cancel_job(handle.job_id) is True
        assert await asyncio.to_thread(saw_cancel.wait, 10)
        assert await asyncio.to_thread(returned.wait, 10)
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.CANCELLED
    assert info.result is None
    rows = await details(runner, handle.job_id, "attempt")
    assert [r["status"] for r in rows] == ["cancelled"]


async def test_cancelled_handler_that_ignores_cancel_cannot_complete(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """A handler that swallows CancelledError and returns: its completion is fenced out."""
    started = asyncio.Event()
    returned = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):  # deliberately ignores the cancel
            await asyncio.Event().wait()
        returned.set()
        await ctx.set_progress(100, "finished anyway")
        return "should not be stored"

    registry.add("stubborn", handler)
    async with running_worker(runner, **SLOW_POLL):
        handle = await runner.schedule_job("stubborn", {})
        await asyncio.wait_for(started.wait(), 30)
        await wait_processing(runner, handle.job_id)
        assert await runner.cancel_job(handle.job_id) is True
        await asyncio.wait_for(returned.wait(), 10)
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.CANCELLED
    assert info.result is None and info.progress_message != "finished anyway"
    assert [r["status"] for r in await details(runner, handle.job_id, "attempt")] == ["cancelled"]


async def test_fencing_rejects_outcomes_of_a_cancelled_attempt(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """Replay the worker's own outcome statements with the cancelled attempt's lease token."""
    started = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    registry.add("fenced", handler)
    async with running_worker(runner, **SLOW_POLL):
        handle = await runner.schedule_job("fenced", {})
        await asyncio.wait_for(started.wait(), 30)
        row = await wait_processing(runner, handle.job_id)
        assert await runner.cancel_job(handle.job_id) is True
    token = row["lease_token"]
    q = runner.db.queries
    ref = AttemptRef(row["tenant"], handle.job_id, token)
    worker = str(uuid.uuid4())
    late_done = CompletedAttempt(ref, '"late"', time.time(), 1.0)
    late_fail = FailedAttempt(ref, '{"type": "x", "message": "late"}', 1.0, time.time(), 1.0)
    async with runner.db.connection() as conn:
        cur = await conn.execute(q.complete_jobs, completed_params([late_done], worker))
        assert await cur.fetchall() == []
        cur = await conn.execute(q.fail_jobs, failed_params([late_fail], worker))
        assert await cur.fetchall() == []
        cur = await conn.execute(
            q.save_progress,
            {
                "tenant": row["tenant"],
                "job_id": handle.job_id,
                "token": token,
                "progress": 55,
                "message": "late",
            },
        )
        assert cur.rowcount == 0
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.CANCELLED
    assert info.result is None and info.progress != 55
    rows = await fetch(
        runner,
        "SELECT status::text AS s FROM {schema}.job_details WHERE job_id = %s",
        handle.job_id,
    )
    assert [r["s"] for r in rows] == ["cancelled"]


async def test_finished_jobs_cannot_be_cancelled(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def ok(ctx: JobContext, data: dict[str, Any]) -> int:
        return 1

    async def bad(ctx: JobContext, data: dict[str, Any]) -> None:
        raise ValueError("no")

    registry.add("ok", ok)
    registry.add("bad", bad, retry=RetryPolicy(max_attempts=1))
    async with running_worker(runner):
        a = await runner.schedule_job("ok", {})
        b = await runner.schedule_job("bad", {})
        await runner.wait_for_job(a.job_id, timeout=30)
        await runner.wait_for_job(b.job_id, timeout=30)
    assert await runner.cancel_job(a.job_id) is False
    assert await runner.cancel_job(b.job_id) is False
    assert await runner.cancel_job(uuid.uuid4()) is False
    ia, ib = await runner.get_job_status(a.job_id), await runner.get_job_status(b.job_id)
    assert ia is not None and ia.status is JobStatus.COMPLETED and ia.result == 1
    assert ib is not None and ib.status is JobStatus.FAILED


async def test_cancel_without_notification_is_caught_by_the_heartbeat(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """If the cancel NOTIFY is lost (listener reconnecting), the next heartbeat finds the job
    no longer held and stops the handler anyway."""
    started, stopped = asyncio.Event(), asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise

    registry.add("quiet-cancel", handler)
    async with running_worker(runner, lease_seconds=1.5, **SLOW_POLL):
        handle = await runner.schedule_job("quiet-cancel", {})
        await asyncio.wait_for(started.wait(), 30)
        # what cancel_job writes, minus its pg_notify
        await fetch(
            runner,
            "UPDATE {schema}.jobs SET status = 'cancelled', completed_at = now() WHERE job_id = %s",
            handle.job_id,
        )
        await asyncio.wait_for(stopped.wait(), 30)
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.CANCELLED
