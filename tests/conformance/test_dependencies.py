"""Conformance: job dependencies (``depends_on``) and child jobs, the same on every backend.

A job with dependencies is ``waiting`` until every one has completed, then queued (pending
while its ``run_at`` is later); a failed or cancelled dependency cancels it (transitively,
naming the dependency) unless it runs anyway (``on_dependency_failure="run"``). Refusals
write nothing. Handlers read their dependencies' results and enqueue children.
"""

from __future__ import annotations

import collections
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import (
    DependencyError,
    InvalidArgumentError,
    JobContext,
    JobStatus,
    NonRetryable,
    SyncJobContext,
)
from jobrunner._jobargs import new_job_id
from jobrunner._limits import MAX_DEPENDENCIES

from .conftest import Backend

OTHER_TENANT = uuid.UUID("00000000-0000-0000-0000-00000000d0d0")


async def _status(backend: Backend, job_id: uuid.UUID, tenant: Any = None) -> JobStatus:
    info = await backend.runner.get_job_status(job_id, tenant=tenant)
    assert info is not None
    return info.status


async def test_fan_in_of_1000_releases_the_dependent_exactly_once(backend: Backend) -> None:
    runs: collections.Counter[str] = collections.Counter()
    seen: list[dict[uuid.UUID, Any]] = []

    async def render(ctx: JobContext, data: dict[str, Any]) -> int:
        runs["render"] += 1
        return int(data["n"])

    async def zip_invoices(ctx: JobContext, data: dict[str, Any]) -> int:
        runs["zip"] += 1
        results = await ctx.dependency_results()
        seen.append(results)
        return sum(results.values())

    backend.registry.add("render", render)
    backend.registry.add("zip", zip_invoices)
    parts = await backend.runner.schedule_jobs("render", [{"n": n} for n in range(1000)])
    zipped = await backend.runner.schedule_job("zip", depends_on=[p.job_id for p in parts])
    assert await _status(backend, zipped.job_id) is JobStatus.WAITING

    await backend.run(timeout=300)
    await backend.runner.wait_for_job(zipped.job_id, timeout=300)
    [info] = await backend.run(zipped)
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 1
    assert runs == {"render": 1000, "zip": 1}
    assert info.result == sum(range(1000))
    [results] = seen
    assert results == {p.job_id: n for n, p in enumerate(parts)}
    details = await backend.runner.get_job_details(zipped.job_id)
    assert details is not None
    assert {d.job_id for d in details.dependencies} == {p.job_id for p in parts}
    assert {d.status for d in details.dependencies} == {JobStatus.COMPLETED}
    part = await backend.runner.get_job_details(parts[0].job_id)
    assert part is not None
    assert [(d.job_id, d.name) for d in part.dependents] == [(zipped.job_id, "zip")]


async def test_a_chain_of_200_runs_in_order(backend: Backend) -> None:
    order: list[int] = []

    def step(ctx: SyncJobContext, data: dict[str, Any]) -> int:
        results = ctx.dependency_results()
        assert list(results.values()) == ([] if data["i"] == 0 else [data["i"] - 1])
        order.append(data["i"])
        return int(data["i"])

    backend.registry.add("link", step)
    handles = [await backend.runner.schedule_job("link", {"i": 0})]
    for i in range(1, 200):
        handles.append(
            await backend.runner.schedule_job("link", {"i": i}, depends_on=[handles[-1].job_id])
        )
    assert await _status(backend, handles[-1].job_id) is JobStatus.WAITING
    started = time.monotonic()
    await backend.run(timeout=300)  # starts the worker where one runs in the background
    await backend.runner.wait_for_job(handles[-1].job_id, timeout=300)
    took = time.monotonic() - started
    infos = await backend.run(handles[-1])
    assert infos[0].status is JobStatus.COMPLETED
    assert order == list(range(200))
    print(f"chain of 200 on {backend.name}: {took:.1f} s")


async def test_a_failed_dependency_cancels_its_dependents_transitively(backend: Backend) -> None:
    ran: list[str] = []

    async def close_cycle(ctx: JobContext, data: dict[str, Any]) -> None:
        raise NonRetryable("the billing cycle does not balance")

    async def record(ctx: JobContext, data: dict[str, Any]) -> Any:
        ran.append(data["as"])
        return {str(k): v for k, v in (await ctx.dependency_results()).items()}

    backend.registry.add("close_cycle", close_cycle)
    backend.registry.add("record", record)
    cycle = await backend.runner.schedule_job("close_cycle")
    render = await backend.runner.schedule_job(
        "record", {"as": "render"}, depends_on=[cycle.job_id]
    )
    zipped = await backend.runner.schedule_job("record", {"as": "zip"}, depends_on=[render.job_id])
    report = await backend.runner.schedule_job(
        "record", {"as": "report"}, depends_on=[zipped.job_id], on_dependency_failure="run"
    )
    audit = await backend.runner.schedule_job(
        "record", {"as": "audit"}, depends_on=[cycle.job_id], on_dependency_failure="run"
    )
    infos = await backend.run(cycle, render, zipped, report, audit)
    statuses = [i.status for i in infos]
    assert statuses == [
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.COMPLETED,
        JobStatus.COMPLETED,
    ]
    assert sorted(ran) == ["audit", "report"]
    _, render_info, zip_info, report_info, audit_info = infos
    assert render_info.error is not None
    assert str(cycle.job_id) in render_info.error.message
    assert "failed" in render_info.error.message
    assert render_info.metadata["cancelled_by"] == "dependency"
    assert zip_info.error is not None
    assert str(render.job_id) in zip_info.error.message
    assert "cancelled" in zip_info.error.message
    assert report_info.result == {str(zipped.job_id): None}
    assert audit_info.result == {str(cycle.job_id): None}


async def test_cancelling_a_job_cancels_its_waiting_dependents(backend: Backend) -> None:
    backend.registry.add("noop", lambda ctx, data: None)
    later = datetime.now(UTC) + timedelta(days=1)
    first = await backend.runner.schedule_job_at("noop", None, later)
    second = await backend.runner.schedule_job("noop", depends_on=[first.job_id])
    third = await backend.runner.schedule_job("noop", depends_on=[second.job_id])
    anyway = await backend.runner.schedule_job(
        "noop", depends_on=[second.job_id], on_dependency_failure="run"
    )
    assert await backend.runner.cancel_job(first.job_id, reason="cycle postponed")
    second_info, third_info, anyway_info = await backend.run(second, third, anyway)
    assert second_info.status is JobStatus.CANCELLED
    assert second_info.error is not None and str(first.job_id) in second_info.error.message
    assert third_info.status is JobStatus.CANCELLED
    assert third_info.error is not None and str(second.job_id) in third_info.error.message
    assert anyway_info.status is JobStatus.COMPLETED


async def test_cancelling_a_waiting_job(backend: Backend) -> None:
    backend.registry.add("noop", lambda ctx, data: None)
    first = await backend.runner.schedule_job_at("noop", None, datetime.now(UTC) + timedelta(1))
    waiting = await backend.runner.schedule_job("noop", depends_on=[first.job_id])
    assert await backend.runner.cancel_job(waiting.job_id)
    assert await _status(backend, waiting.job_id) is JobStatus.CANCELLED
    assert await _status(backend, first.job_id) is JobStatus.PENDING


async def test_dependencies_already_final_at_enqueue(backend: Backend) -> None:
    async def maybe_fail(ctx: JobContext, data: dict[str, Any]) -> str:
        if data.get("fail"):
            raise NonRetryable("no")
        return "ok"

    backend.registry.add("maybe_fail", maybe_fail)
    done = await backend.runner.schedule_job("maybe_fail")
    failed = await backend.runner.schedule_job("maybe_fail", {"fail": True})
    await backend.run(done, failed)
    after_done = await backend.runner.schedule_job("maybe_fail", depends_on=[done.job_id])
    assert await _status(backend, after_done.job_id) in (
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        JobStatus.COMPLETED,
    )
    after_failed = await backend.runner.schedule_job("maybe_fail", depends_on=[failed.job_id])
    info = await backend.runner.get_job_status(after_failed.job_id)
    assert info is not None and info.status is JobStatus.CANCELLED
    assert info.error is not None and str(failed.job_id) in info.error.message
    runs_anyway = await backend.runner.schedule_job(
        "maybe_fail", depends_on=[failed.job_id, done.job_id], on_dependency_failure="run"
    )
    infos = await backend.run(after_done, runs_anyway)
    assert [i.status for i in infos] == [JobStatus.COMPLETED, JobStatus.COMPLETED]


async def test_a_released_job_waits_for_its_run_at(backend: Backend) -> None:
    backend.registry.add("noop", lambda ctx, data: None)
    first = await backend.runner.schedule_job("noop")
    later = datetime.now(UTC) + timedelta(days=1)
    second = await backend.runner.schedule_job_at("noop", None, later, depends_on=[first.job_id])
    assert await _status(backend, second.job_id) is JobStatus.WAITING
    await backend.run(first)
    assert await _status(backend, second.job_id) is JobStatus.PENDING


async def test_fan_out_of_a_batch(backend: Backend) -> None:
    backend.registry.add("noop", lambda ctx, data: data)
    cycle = await backend.runner.schedule_job("noop", {"cycle": 1})
    invoices = await backend.runner.schedule_jobs(
        "noop", [{"invoice": i} for i in range(50)], depends_on=[cycle.job_id]
    )
    assert {await _status(backend, h.job_id) for h in invoices} == {JobStatus.WAITING}
    infos = await backend.run(*invoices)
    assert {i.status for i in infos} == {JobStatus.COMPLETED}
    details = await backend.runner.get_job_details(cycle.job_id)
    assert details is not None
    assert {d.job_id for d in details.dependents} == {h.job_id for h in invoices}


async def test_refusals_write_nothing(backend: Backend) -> None:
    backend.registry.add("noop", lambda ctx, data: None)
    mine = await backend.runner.schedule_job("noop")
    theirs = await backend.runner.schedule_job("noop", tenant=OTHER_TENANT)
    before = (await backend.runner.get_metrics()).total

    # an id no job has; a job that does not exist yet cannot be named, so no cycle can form
    with pytest.raises(DependencyError, match="does not have"):
        await backend.runner.schedule_job("noop", depends_on=[mine.job_id, new_job_id()])
    # another tenant's job is as unknown as one that never existed
    with pytest.raises(DependencyError, match=str(theirs.job_id)):
        await backend.runner.schedule_job("noop", depends_on=[theirs.job_id])
    with pytest.raises(DependencyError):
        await backend.runner.schedule_jobs("noop", [{}, {}], depends_on=[theirs.job_id])
    with pytest.raises(DependencyError, match="MAX_DEPENDENCIES"):
        await backend.runner.schedule_job(
            "noop", depends_on=[uuid.uuid4() for _ in range(MAX_DEPENDENCIES + 1)]
        )
    with pytest.raises(DependencyError, match="singleton"):
        await backend.runner.schedule_job("noop", depends_on=[mine.job_id], singleton_key="k")
    with pytest.raises(DependencyError):
        await backend.runner.schedule_job("noop", depends_on="not-a-list")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="on_dependency_failure"):
        await backend.runner.schedule_job(
            "noop",
            depends_on=[mine.job_id],
            on_dependency_failure="ignore",  # type: ignore[typeddict-item]
        )
    assert (await backend.runner.get_metrics()).total == before
    # duplicates count once
    both = await backend.runner.schedule_job("noop", depends_on=[mine.job_id, mine.job_id])
    details = await backend.runner.get_job_details(both.job_id)
    assert details is not None and [d.job_id for d in details.dependencies] == [mine.job_id]


@pytest.mark.requires("child_jobs")
async def test_a_handler_enqueues_children_that_record_their_parent(backend: Backend) -> None:
    async def email(ctx: JobContext, data: dict[str, Any]) -> str:
        return f"sent {data['to']}"

    async def close(ctx: JobContext, data: dict[str, Any]) -> list[str]:
        first = await ctx.schedule_job("email", {"to": "a"})
        second = await ctx.schedule_job("email", {"to": "b"}, depends_on=[first.job_id])
        with pytest.raises(InvalidArgumentError):
            await ctx.schedule_job("email", {"to": "c"}, tenant=OTHER_TENANT)
        return [str(first.job_id), str(second.job_id)]

    backend.registry.add("email", email)
    backend.registry.add("close", close)
    parent = await backend.runner.schedule_job("close")
    [info] = await backend.run(parent)
    assert info.status is JobStatus.COMPLETED
    children = [uuid.UUID(c) for c in info.result]
    infos = [await backend.runner.wait_for_job(child, timeout=30) for child in children]
    assert [i.result for i in infos] == ["sent a", "sent b"]
    details = await backend.runner.get_job_details(parent.job_id)
    assert details is not None
    assert {c.job_id for c in details.children} == set(children)
    child = await backend.runner.get_job_details(children[1])
    assert child is not None
    assert child.parent_job_id == parent.job_id
    assert [d.job_id for d in child.dependencies] == [children[0]]


async def test_metrics_count_waiting(backend: Backend) -> None:
    backend.registry.add("noop", lambda ctx, data: None)
    first = await backend.runner.schedule_job_at("noop", None, datetime.now(UTC) + timedelta(1))
    await backend.runner.schedule_jobs("noop", [{}, {}, {}], depends_on=[first.job_id])
    metrics = await backend.runner.get_metrics()
    assert metrics.by_status["waiting"] == 3
    page = await backend.runner.list_jobs(status="waiting")
    assert len(page.jobs) == 3
