"""Dependencies on Temporal beyond the conformance suite: what is refused (typed, nothing
written), and a waiting job's workflow as Temporal shows it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobrunner import JobContext, JobHandlerRegistry, JobStatus, NotSupportedError

pytestmark = pytest.mark.temporal


async def test_depends_on_previous_is_refused_and_nothing_is_written(
    trunner: Any, registry: JobHandlerRegistry
) -> None:
    registry.add("tick", lambda ctx, data: None)
    with pytest.raises(NotSupportedError, match="depends_on_previous"):
        await trunner.schedule_recurring_job("tick", {}, "1 hours", depends_on_previous=True)
    assert await trunner.list_schedules() == []


async def test_a_waiting_jobs_workflow_shows_waiting_then_runs(
    trunner: Any, tworker: Any, registry: JobHandlerRegistry
) -> None:
    gate = asyncio.Event()

    async def first(ctx: JobContext, data: dict[str, Any]) -> int:
        await gate.wait()
        return 41

    async def second(ctx: JobContext, data: dict[str, Any]) -> int:
        [value] = (await ctx.dependency_results()).values()
        return int(value) + 1

    registry.add("first", first)
    registry.add("second", second)
    a = await trunner.schedule_job("first")
    b = await trunner.schedule_job("second", depends_on=[a.job_id])
    workflow = trunner.client.get_workflow_handle(b.external_id)
    for _ in range(200):  # the workflow's state query: no event to await for "it is waiting"
        state = await workflow.query("getJobState")
        if state["step"] == "waiting":
            break
        await asyncio.sleep(0.05)
    assert state["step"] == "waiting"
    gate.set()
    info = await trunner.wait_for_job(b.job_id, timeout=60)
    assert (info.status, info.result) == (JobStatus.COMPLETED, 42)
