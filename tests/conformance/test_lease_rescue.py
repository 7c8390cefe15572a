"""Conformance: a job whose worker died is rescued when its lease runs out (docs/concepts.md,
"Leases, heartbeats and fencing"; docs/guarantees.md, "What an interrupted attempt leaves
behind"), the same on every backend.

``Backend.dead_worker`` claims a job as a worker that then stops: it heartbeats no more and
records no outcome. Its attempt had reported progress and opened a step.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from jobrunner import JobContext, JobStatus, RetryPolicy, ScheduledJob

from .conftest import Backend

LEASE = 1.0


async def _dead_attempt(
    backend: Backend, retry: RetryPolicy
) -> tuple[ScheduledJob, JobContext, list[int]]:
    """A job claimed by a worker that reported 40 %, opened a step and died: the job, the dead
    attempt's context, and the list that receives the attempts the handler runs from then."""
    runs: list[int] = []

    async def work(ctx: JobContext, data: dict[str, Any]) -> str:
        runs.append(ctx.attempt)
        return "done"

    backend.registry.add("work", work, retry=retry)
    handle = await backend.runner.schedule_job("work")
    job, ctx = await backend.dead_worker(LEASE)
    assert job.job_id == handle.job_id
    await ctx.set_progress(40, "halfway")
    assert backend.store is not None
    await backend.store.start_step(ctx, "load")  # opened, never closed: it died inside it
    info = await backend.runner.get_job_status(handle.job_id)
    assert info is not None
    assert (info.status, info.attempts, info.progress) == (JobStatus.PROCESSING, 1, 40)
    return handle, ctx, runs


async def _step(backend: Backend, job_id: uuid.UUID, name: str) -> Any:
    details = await backend.runner.get_job_details(job_id)
    assert details is not None
    [step] = [s for s in details.steps if s.step_name == name]
    return step


@pytest.mark.requires("dead_worker")
async def test_a_dead_workers_job_is_rescued_and_runs_again(backend: Backend) -> None:
    handle, _, runs = await _dead_attempt(backend, RetryPolicy(max_attempts=3))
    job_id = handle.job_id
    assert await backend.expire_leases(LEASE) == 1
    rescued = await backend.runner.get_job_status(job_id)
    assert rescued is not None
    assert rescued.status is JobStatus.RETRYING
    assert rescued.attempts == 1  # the dead attempt counts
    assert rescued.progress == 0  # the next attempt starts clean
    step = await _step(backend, job_id, "load")
    assert step.status is JobStatus.FAILED
    assert step.result["type"] == "jobrunner.LeaseExpired"

    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == "done"
    assert info.attempts == 2
    assert runs == [2]


@pytest.mark.requires("dead_worker")
async def test_a_dead_workers_job_without_attempts_left_fails(backend: Backend) -> None:
    handle, _, runs = await _dead_attempt(backend, RetryPolicy(max_attempts=1))
    job_id = handle.job_id
    assert await backend.expire_leases(LEASE) == 1
    info = await backend.runner.get_job_status(job_id)
    assert info is not None
    assert info.status is JobStatus.FAILED
    assert info.progress == 40  # a job failed for good keeps its progress
    assert info.error is not None
    assert (await _step(backend, job_id, "load")).status is JobStatus.FAILED
    assert runs == []


@pytest.mark.requires("dead_worker")
async def test_the_dead_attempt_can_write_nothing_after_the_rescue(backend: Backend) -> None:
    """Fencing: the dead worker waking up later changes neither progress nor steps."""
    handle, ctx, _ = await _dead_attempt(backend, RetryPolicy(max_attempts=3))
    job_id = handle.job_id
    assert await backend.expire_leases(LEASE) == 1
    await ctx.set_progress(90, "I am back")
    with pytest.raises(asyncio.CancelledError):  # the attempt is over: the step is skipped
        async with ctx.step("late"):
            pass
    info = await backend.runner.get_job_status(job_id)
    assert info is not None
    assert info.progress == 0
    details = await backend.runner.get_job_details(job_id)
    assert details is not None
    assert "late" not in {s.step_name for s in details.steps}


@pytest.mark.requires("worker_lease")
async def test_a_live_workers_heartbeats_keep_a_long_attempt_alive(backend: Backend) -> None:
    runs: list[int] = []

    async def long(ctx: JobContext, data: dict[str, Any]) -> str:
        runs.append(ctx.attempt)
        await asyncio.sleep(backend.lease_seconds * 2.5)  # the work, not a synchronisation
        return "finished"

    backend.registry.add("long", long, timeout=60)
    async with backend.worker(lease_seconds=backend.lease_seconds):
        handle = await backend.runner.schedule_job("long")
        info = await backend.runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 1
    assert runs == [1]
