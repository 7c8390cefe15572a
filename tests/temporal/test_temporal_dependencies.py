"""Dependencies on Temporal beyond the conformance suite: recurring runs that wait for the
previous run (``depends_on_previous``), and a waiting job's workflow as Temporal shows it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import ScheduleOverlapPolicy

from apps.helpers import eventually, fetch
from jobrunner import JobContext, JobHandlerRegistry, JobStatus

pytestmark = pytest.mark.temporal


async def test_depends_on_previous_runs_wait_for_the_previous_run(
    trunner: Any, tworker: Any, registry: JobHandlerRegistry
) -> None:
    gate = asyncio.Event()
    order: list[int] = []

    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        order.append(len(order))
        if len(order) == 1:
            await gate.wait()

    registry.add("tick", tick)
    made = await trunner.schedule_recurring_job("tick", {}, "1 hours", depends_on_previous=True)
    sched = trunner.client.get_schedule_handle(made.external_id)

    async def runs() -> list[dict[str, Any]]:
        return await fetch(
            trunner,
            "SELECT job_id, status::text AS status FROM {schema}.jobs WHERE schedule_id = %s"
            " ORDER BY created_at",
            made.job_id,
        )

    await sched.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    await eventually(runs, lambda r: [x["status"] for x in r] == ["processing"], what="run 1")
    # Not a wait for an event: a triggered run's workflow id ends with the trigger time to the
    # second, so a second trigger within the same second would be the same workflow.
    await asyncio.sleep(1.1)
    await sched.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    second = await eventually(
        runs, lambda r: [x["status"] for x in r] == ["processing", "waiting"], what="run 2"
    )
    details = await trunner.get_job_details(second[1]["job_id"])
    assert [d.job_id for d in details.dependencies] == [second[0]["job_id"]]
    gate.set()
    for row in second:
        info = await trunner.wait_for_job(row["job_id"], timeout=60)
        assert info.status is JobStatus.COMPLETED
    assert order == [0, 1]


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
