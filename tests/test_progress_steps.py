"""Progress (persisted, throttled, from async and sync handlers) and ``job_details`` rows for
steps and attempts."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from apps.helpers import details, eventually, job_row
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
