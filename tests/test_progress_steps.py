"""Progress (persisted, throttled, from async and sync handlers) and ``job_details`` rows for
steps and attempts."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from apps.helpers import details, eventually, fetch, job_row
from jobrunner import InvalidArgumentError, JobContext, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner._context import PROGRESS_INTERVAL
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker


def count_saves(runner: PostgresJobRunner) -> list[tuple[int, str | None]]:
    """Spy on the store's progress writes (the worker's sink)."""
    calls: list[tuple[int, str | None]] = []
    original = runner.store.save_progress

    async def spy(ctx: JobContext, progress: int, message: str | None) -> None:
        calls.append((progress, message))
        await original(ctx, progress, message)

    runner.store.save_progress = spy  # type: ignore[method-assign]
    return calls


async def test_progress_persisted_and_throttled(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    saves = count_saves(runner)
    gate = asyncio.Event()
    elapsed: list[float] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        await ctx.set_progress(50, "halfway")
        await gate.wait()
        t0 = time.monotonic()
        for i in range(400):
            await ctx.set_progress(50 + i // 10, f"chatty {i}")
            await asyncio.sleep(0)
        elapsed.append(time.monotonic() - t0)
        return "done"

    registry.add("progress", handler)
    async with running_worker(runner):
        handle = await runner.schedule_job("progress", {})
        row = await eventually(
            lambda: job_row(runner, handle.job_id),
            lambda r: r["progress"] == 50,
            what="progress 50",
        )
        assert row["progress_message"] == "halfway" and row["status"] == "processing"
        info = await runner.get_job_status(handle.job_id)
        assert info is not None and info.progress == 50 and info.progress_message == "halfway"
        gate.set()
        done = await runner.wait_for_job(handle.job_id, timeout=30)
    assert done.status is JobStatus.COMPLETED and done.progress == 100
    # the latest throttled value reached the database before completion
    assert done.progress_message == "chatty 399"
    assert saves[-1] == (89, "chatty 399")
    # 401 calls, but at most one write per interval (+ first, + final flush)
    assert len(saves) <= 4 + elapsed[0] / PROGRESS_INTERVAL, (len(saves), elapsed)
    assert len(saves) < 401


async def test_progress_and_steps_from_sync_handler(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    gate = threading.Event()

    def handler(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
        ctx.set_progress(40, "sync progress")
        with ctx.step("sync-step") as step:
            assert gate.wait(30)
            step.result = {"rows": 7}
        with pytest.raises(InvalidArgumentError):
            ctx.set_progress(150)
        with pytest.raises(KeyError), ctx.step("sync-bad-step"):
            raise KeyError("missing row")
        return {"ok": True}

    registry.add("sync-progress", handler)
    async with running_worker(runner):
        handle = await runner.schedule_job("sync-progress", {})
        row = await eventually(
            lambda: job_row(runner, handle.job_id),
            lambda r: r["progress"] == 40,
            what="progress 40",
        )
        assert row["progress_message"] == "sync progress"
        steps = await eventually(
            lambda: details(runner, handle.job_id, "sync-step"),
            lambda rs: len(rs) == 1,
            what="step row",
        )
        assert steps[0]["status"] == "processing"
        gate.set()
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED and info.result == {"ok": True}
    (step_row,) = await details(runner, handle.job_id, "sync-step")
    assert step_row["status"] == "completed"
    assert step_row["result"] == {"rows": 7}
    assert step_row["retry_count"] == 1
    (bad_row,) = await details(runner, handle.job_id, "sync-bad-step")
    assert bad_row["status"] == "failed" and bad_row["retry_count"] == 1
    assert bad_row["result"]["type"] == "KeyError"


async def test_step_rows_per_attempt(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    gate = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        async with ctx.step("fetch") as step:
            step.result = {"rows": 3, "attempt": ctx.attempt}
        async with ctx.step("render"):
            if ctx.attempt == 1:
                raise ValueError("render failed")
            await gate.wait()
        return "pdf"

    registry.add(
        "steps", handler, retry=RetryPolicy(max_attempts=3, initial_interval=0.05, max_interval=0.1)
    )
    tenant = uuid.uuid4()
    async with running_worker(runner, rand=lambda: 0.5):
        handle = await runner.schedule_job("steps", {}, tenant=tenant)
        # attempt 2 is inside "render": that row is processing
        rows = await eventually(
            lambda: details(runner, handle.job_id, "render"),
            lambda rs: any(r["retry_count"] == 2 for r in rs),
            what="second render step",
        )
        assert [r["status"] for r in rows if r["retry_count"] == 2] == ["processing"]
        gate.set()
        info = await runner.wait_for_job(handle.job_id, tenant=tenant, timeout=30)
    assert info.status is JobStatus.COMPLETED and info.attempts == 2
    rows = await details(runner, handle.job_id)
    summary = sorted((r["step_name"], r["status"], r["retry_count"]) for r in rows)
    assert summary == sorted(
        [
            ("fetch", "completed", 1),
            ("render", "failed", 1),
            ("attempt", "failed", 1),
            ("fetch", "completed", 2),
            ("render", "completed", 2),
            ("attempt", "completed", 2),
        ]
    )
    assert all(r["tenant"] == tenant for r in rows)
    failed_render = next(r for r in rows if r["step_name"] == "render" and r["status"] == "failed")
    assert failed_render["result"]["type"] == "ValueError"
    assert failed_render["result"]["message"] == "render failed"
    fetch_rows = [r for r in rows if r["step_name"] == "fetch"]
    assert sorted(r["result"]["attempt"] for r in fetch_rows) == [1, 2]
    assert all(r["processed_at"] is not None for r in rows)
    # the public view of the same rows
    job_details = await runner.get_job_details(handle.job_id, tenant=tenant)
    assert job_details is not None
    public = sorted((s.step_name, s.status.value, s.retry_count) for s in job_details.steps)
    assert public == summary
    assert await runner.get_job_details(handle.job_id) is None  # other tenant


def test_progress_arguments_validated() -> None:
    ctx = JobContext(job_id=uuid.uuid4(), name="n", tenant=uuid.uuid4(), attempt=1)

    async def go() -> None:
        for bad in (-1, 101, "50", None, True, float("nan")):
            with pytest.raises(InvalidArgumentError):
                await ctx.set_progress(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await ctx.set_progress(5, "x" * 1001)
        with pytest.raises(InvalidArgumentError):
            async with ctx.step(""):
                pass
        await ctx.set_progress(5.5, "no sink: accepted, not stored")

    asyncio.run(go())


async def test_sync_overrun_writes_nothing_after_its_failure(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """A sync handler past its timeout keeps running in its thread, but its late step and
    progress writes are fenced off: a step open at the timeout is closed as failed by the
    attempt's failure and never completed by the handler, a step
    started afterwards writes no row, and its progress is dropped, even while the job's next
    attempt is ``processing`` (a new lease token)."""
    release = threading.Event()
    second_started = threading.Event()
    late_done = threading.Event()
    seen: dict[str, Any] = {}

    def handler(ctx: Any, data: dict[str, Any]) -> str:
        if ctx.attempt == 1:
            with ctx.step("open-at-timeout") as open_step:
                assert release.wait(30)
                open_step.result = {"late": True}
            seen["cancelled"] = ctx.is_cancelled()
            ctx.set_progress(90, "too late")
            with ctx.step("after-timeout") as late:
                late.result = {"late": True}
            seen["recorded"] = late.recorded
            late_done.set()
            return "late result"
        second_started.set()
        assert late_done.wait(30)
        return "second"

    registry.add(
        "sync-overrun-steps",
        handler,
        timeout=1.0,
        retry=RetryPolicy(max_attempts=2, initial_interval=0.05, max_interval=0.05),
    )
    async with running_worker(runner, rand=lambda: 0.5):
        handle = await runner.schedule_job("sync-overrun-steps", {})
        # attempt 1 timed out and was recorded; attempt 2 holds the lease now
        assert await asyncio.to_thread(second_started.wait, 30)
        (attempt_row,) = await details(runner, handle.job_id, "attempt")
        assert attempt_row["status"] == "failed" and attempt_row["retry_count"] == 1
        row = await job_row(runner, handle.job_id)
        assert row["status"] == "processing" and row["attempts"] == 2
        release.set()
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert seen == {"cancelled": True, "recorded": False}
    assert info.status is JobStatus.COMPLETED and info.result == "second"
    assert info.progress_message != "too late"
    rows = await details(runner, handle.job_id)
    assert not [r for r in rows if r["step_name"] == "after-timeout"]
    (open_row,) = [r for r in rows if r["step_name"] == "open-at-timeout"]
    # Closed by the attempt's failure (its own late finish was fenced off), not left open.
    assert open_row["status"] == "failed"
    assert open_row["result"]["type"].endswith("JobTimeoutError")


async def _claimed(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> JobContext:
    """A job marked ``processing`` by a (simulated) claim, and a context for that attempt."""
    registry.add("fenced", lambda ctx, data: None)
    handle = await runner.schedule_job("fenced", {})
    (row,) = await fetch(
        runner,
        "UPDATE {schema}.jobs SET status = 'processing', attempts = 1, "
        "lease_token = lease_token + 1, lease_expires_at = now() + interval '1 minute' "
        "WHERE job_id = %s RETURNING lease_token",
        handle.job_id,
    )
    return JobContext(
        job_id=handle.job_id,
        name="fenced",
        tenant=handle.tenant,
        attempt=1,
        lease_token=row["lease_token"],
        _sink=runner.store,
    )


async def test_stale_lease_token_cannot_write_a_step(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    current = await _claimed(runner, registry)
    stale = JobContext(
        job_id=current.job_id,
        name="fenced",
        tenant=current.tenant,
        attempt=1,
        lease_token=current.lease_token - 1,
        _sink=runner.store,
    )
    with pytest.raises(asyncio.CancelledError):
        async with stale.step("stale"):
            pytest.fail("a fenced-off step must not run its block")
    assert stale.is_cancelled() and not current.is_cancelled()
    assert await details(runner, current.job_id) == []
    # the holder of the lease writes; once its lease is taken over it cannot finish the row
    async with current.step("mine") as step:
        step.result = {"ok": 1}
        await fetch(
            runner,
            "UPDATE {schema}.jobs SET lease_token = lease_token + 1 WHERE job_id = %s",
            current.job_id,
        )
    (row,) = await details(runner, current.job_id)
    assert row["step_name"] == "mine" and row["status"] == "processing" and row["result"] is None


async def test_step_fenced_once_the_job_is_not_processing(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    ctx = await _claimed(runner, registry)
    await fetch(runner, "UPDATE {schema}.jobs SET status = 'failed' WHERE job_id = %s", ctx.job_id)
    with pytest.raises(asyncio.CancelledError):
        async with ctx.step("after-outcome"):
            pass
    assert await details(runner, ctx.job_id) == []


def test_step_after_cancellation_raises_cancelled() -> None:
    ctx = JobContext(job_id=uuid.uuid4(), name="n", tenant=uuid.uuid4(), attempt=1)

    async def go() -> None:
        async with ctx.step("before") as before:
            assert before.recorded is False  # no sink: nothing to record
        ctx.mark_cancelled()
        with pytest.raises(asyncio.CancelledError):
            async with ctx.step("after"):
                pytest.fail("must not run")

    asyncio.run(go())
