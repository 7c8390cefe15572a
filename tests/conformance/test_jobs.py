"""Conformance: scheduling, status, results, retries, timeouts, cancellation, progress, steps,
tenancy and singleton keys behave the same on every backend."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import (
    HandlerNotFoundError,
    InvalidArgumentError,
    JobContext,
    JobStatus,
    NonRetryable,
    Retry,
    RetryPolicy,
    SyncJobContext,
)
from jobrunner.testing import assert_not_enqueued

from .conftest import FAST_RETRY, Backend, eventually, final


async def attempt_rows(backend: Backend, job_id: uuid.UUID, tenant: Any = None) -> list[Any]:
    details = await backend.runner.get_job_details(job_id, tenant=tenant)
    assert details is not None
    return [s for s in details.steps if s.step_name == "attempt"]


# -- scheduling, status, results --------------------------------------------------------------
async def test_a_job_runs_once_and_reports_its_result(backend: Backend) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []

    async def add(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        seen.append((ctx.attempt, data))
        return {"sum": data["a"] + data["b"]}

    backend.registry.add("add", add)
    tenant = uuid.uuid4()
    handle = await backend.runner.schedule_job(
        "add", {"a": 2, "b": 3}, tenant=tenant, metadata={"source": "conformance"}
    )
    assert handle.created
    assert handle.tenant == tenant
    queued = await backend.runner.get_job_status(handle.job_id, tenant=tenant)
    assert queued is not None
    assert queued.status is JobStatus.QUEUED
    assert queued.attempts == 0
    assert queued.name == "add"

    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == {"sum": 5}
    assert info.attempts == 1
    assert info.progress == 100
    assert info.error is None
    assert info.metadata == {"source": "conformance"}
    assert info.runner_type == backend.name
    assert info.started_at is not None
    assert info.completed_at is not None
    assert seen == [(1, {"a": 2, "b": 3})]
    details = await backend.runner.get_job_details(handle.job_id, tenant=tenant)
    assert details is not None
    assert details.data == {"a": 2, "b": 3}
    assert [
        (s.status, s.retry_count) for s in await attempt_rows(backend, handle.job_id, tenant)
    ] == [(JobStatus.COMPLETED, 1)]


@pytest.mark.parametrize("value", [None, "text", [1, "two", {"three": 3}], 42])
async def test_results_of_any_json_shape(backend: Backend, value: Any) -> None:
    async def give(ctx: JobContext, data: dict[str, Any]) -> Any:
        return value

    backend.registry.add("give", give)
    [info] = await backend.run(await backend.runner.schedule_job("give"))
    assert info.status is JobStatus.COMPLETED
    assert info.result == value


async def test_plain_function_handlers_run_with_a_sync_context(backend: Backend) -> None:
    def shout(ctx: SyncJobContext, data: dict[str, Any]) -> str:
        ctx.set_progress(50, "half way")
        with ctx.step("upper") as step:
            step.result = {"len": len(data["word"])}
        return str(data["word"]).upper()

    backend.registry.add("shout", shout)
    handle = await backend.runner.schedule_job("shout", {"word": "hey"})
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == "HEY"
    details = await backend.runner.get_job_details(handle.job_id)
    assert details is not None
    [step] = [s for s in details.steps if s.step_name == "upper"]
    assert step.status is JobStatus.COMPLETED
    assert step.result == {"len": 3}


async def test_a_job_scheduled_for_later_is_pending_until_then(backend: Backend) -> None:
    calls: list[int] = []

    async def later(ctx: JobContext, data: dict[str, Any]) -> None:
        calls.append(1)

    backend.registry.add("later", later)
    run_at = datetime.now(UTC) + timedelta(hours=1)
    handle = await backend.runner.schedule_job_at("later", {}, run_at)
    info = await backend.runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.PENDING
    assert info.run_at is not None
    assert abs((info.run_at - run_at).total_seconds()) < 1
    assert calls == []


@pytest.mark.requires("time_travel")
async def test_a_job_scheduled_for_later_runs_when_its_time_comes(backend: Backend) -> None:
    calls: list[int] = []

    async def later(ctx: JobContext, data: dict[str, Any]) -> None:
        calls.append(1)

    backend.registry.add("later", later)
    handle = await backend.runner.schedule_job_at(
        "later", {}, datetime.now(UTC) + timedelta(minutes=30)
    )
    await backend.advance(timedelta(minutes=5))
    assert calls == []
    await backend.advance(timedelta(hours=1))
    info = await backend.runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.COMPLETED
    assert calls == [1]


async def test_bulk_scheduling_runs_every_job(backend: Backend) -> None:
    async def double(ctx: JobContext, data: dict[str, Any]) -> int:
        return int(data["n"]) * 2

    backend.registry.add("double", double)
    handles = await backend.runner.schedule_jobs("double", [{"n": i} for i in range(5)])
    assert len({h.job_id for h in handles}) == 5
    infos = await backend.run(*handles)
    assert [i.result for i in infos] == [0, 2, 4, 6, 8]


async def test_bad_input_is_refused_and_nothing_is_written(backend: Backend) -> None:
    async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    backend.registry.add("noop", noop)
    with pytest.raises(HandlerNotFoundError):
        await backend.runner.schedule_job("no-such-job", {})
    with pytest.raises(InvalidArgumentError):
        await backend.runner.schedule_job("noop", {"x": object()})
    with pytest.raises(InvalidArgumentError):
        await backend.runner.schedule_job_at("noop", {}, datetime.now() + timedelta(hours=1))
    with pytest.raises(InvalidArgumentError):
        await backend.runner.schedule_job("noop", {}, tenant="not-a-uuid")
    assert_not_enqueued(backend.runner, "noop")
    assert await backend.runner.get_job_status(uuid.uuid4()) is None


# -- retries ----------------------------------------------------------------------------------
async def test_a_failing_job_is_retried_then_fails_with_its_error(backend: Backend) -> None:
    attempts: list[int] = []

    async def broken(ctx: JobContext, data: dict[str, Any]) -> None:
        attempts.append(ctx.attempt)
        raise ValueError(f"broken on attempt {ctx.attempt}")

    backend.registry.add("broken", broken, retry=FAST_RETRY)
    handle = await backend.runner.schedule_job("broken")
    [info] = await backend.run(handle)
    assert info.status is JobStatus.FAILED
    assert info.attempts == 3
    assert info.max_attempts == 3
    assert attempts == [1, 2, 3]
    assert info.error is not None
    assert info.error.type.endswith("ValueError")
    assert info.error.message == "broken on attempt 3"
    assert info.error.traceback
    assert "broken on attempt 3" in info.error.traceback
    rows = await attempt_rows(backend, handle.job_id)
    assert [(r.status, r.retry_count) for r in rows] == [
        (JobStatus.FAILED, 1),
        (JobStatus.FAILED, 2),
        (JobStatus.FAILED, 3),
    ]


async def test_a_flaky_job_succeeds_on_a_later_attempt(backend: Backend) -> None:
    async def flaky(ctx: JobContext, data: dict[str, Any]) -> str:
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return f"ok on {ctx.attempt}"

    backend.registry.add("flaky", flaky, retry=FAST_RETRY)
    [info] = await backend.run(await backend.runner.schedule_job("flaky"))
    assert info.status is JobStatus.COMPLETED
    assert info.result == "ok on 3"
    assert info.attempts == 3
    assert info.error is None


async def test_retry_asks_for_another_attempt(backend: Backend) -> None:
    async def again(ctx: JobContext, data: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            raise Retry(delay=0.05, reason="not yet")
        return ctx.attempt

    backend.registry.add(
        "again", again, retry=RetryPolicy(max_attempts=2, initial_interval=60, max_interval=60)
    )
    handle = await backend.runner.schedule_job("again")
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == 2
    [first, _second] = await attempt_rows(backend, handle.job_id)
    assert first.status is JobStatus.FAILED
    assert first.result["message"] == "not yet"


async def test_retry_without_attempts_left_fails(backend: Backend) -> None:
    async def insist(ctx: JobContext, data: dict[str, Any]) -> None:
        raise Retry(delay=0.01, reason="still not")

    backend.registry.add("insist", insist, retry=RetryPolicy(max_attempts=2, **_FAST_ARGS))
    [info] = await backend.run(await backend.runner.schedule_job("insist"))
    assert info.status is JobStatus.FAILED
    assert info.attempts == 2
    assert info.error is not None
    assert info.error.message == "still not"


async def test_non_retryable_fails_at_once(backend: Backend) -> None:
    async def fatal(ctx: JobContext, data: dict[str, Any]) -> None:
        raise NonRetryable("bad input, retrying will not help")

    backend.registry.add("fatal", fatal, retry=FAST_RETRY)
    [info] = await backend.run(await backend.runner.schedule_job("fatal"))
    assert info.status is JobStatus.FAILED
    assert info.attempts == 1
    assert info.error is not None
    assert info.error.message == "bad input, retrying will not help"


async def test_the_policy_names_errors_that_are_not_retried(backend: Backend) -> None:
    async def lookup(ctx: JobContext, data: dict[str, Any]) -> None:
        raise KeyError("missing")

    policy = RetryPolicy(max_attempts=3, non_retryable_errors=[KeyError], **_FAST_ARGS)
    backend.registry.add("lookup", lookup, retry=policy)
    [info] = await backend.run(await backend.runner.schedule_job("lookup"))
    assert info.status is JobStatus.FAILED
    assert info.attempts == 1
    assert info.error is not None
    assert info.error.type.endswith("KeyError")


async def test_a_failed_job_can_be_retried_by_hand(backend: Backend) -> None:
    healthy = asyncio.Event()

    async def gate(ctx: JobContext, data: dict[str, Any]) -> str:
        if not healthy.is_set():
            raise NonRetryable("downstream is down")
        return "recovered"

    backend.registry.add("gate", gate)
    handle = await backend.runner.schedule_job("gate")
    [failed] = await backend.run(handle)
    assert failed.status is JobStatus.FAILED
    assert not await backend.runner.retry_job(uuid.uuid4())
    healthy.set()
    assert await backend.runner.retry_job(handle.job_id)
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == "recovered"
    assert info.attempts == 1
    assert not await backend.runner.retry_job(handle.job_id)  # completed: nothing to retry


# -- timeouts ---------------------------------------------------------------------------------
async def test_a_handler_past_its_timeout_fails_the_attempt(backend: Backend) -> None:
    async def slow(ctx: JobContext, data: dict[str, Any]) -> None:
        await asyncio.sleep(60)

    backend.registry.add("slow", slow, timeout=0.5, retry=RetryPolicy(max_attempts=1))
    [info] = await backend.run(await backend.runner.schedule_job("slow"))
    assert info.status is JobStatus.FAILED
    assert info.attempts == 1
    assert info.error is not None
    assert "timeout" in (info.error.type + info.error.message).lower()


# -- cancellation -----------------------------------------------------------------------------
async def test_cancelling_a_queued_job(backend: Backend) -> None:
    calls: list[int] = []

    async def never(ctx: JobContext, data: dict[str, Any]) -> None:
        calls.append(1)

    backend.registry.add("never", never)
    handle = await backend.runner.schedule_job("never")
    other = await backend.runner.schedule_job("never")
    assert await backend.runner.cancel_job(handle.job_id, reason="changed my mind")
    info = await backend.runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.CANCELLED
    assert not await backend.runner.cancel_job(handle.job_id)  # already final
    assert not await backend.runner.cancel_job(uuid.uuid4())
    [done] = await backend.run(other)
    assert done.status is JobStatus.COMPLETED
    assert calls == [1]  # only the other job ran
    info = await backend.runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.CANCELLED


async def test_cancelling_a_running_job_stops_its_handler(backend: Backend) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def long(ctx: JobContext, data: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    backend.registry.add("long", long, retry=FAST_RETRY)
    async with backend.worker():
        handle = await backend.runner.schedule_job("long")
        await asyncio.wait_for(started.wait(), 30)
        await eventually(
            lambda: backend.runner.get_job_status(handle.job_id),
            final(JobStatus.PROCESSING),
            what="processing",
        )
        assert await backend.runner.cancel_job(handle.job_id, reason="stop")
        await asyncio.wait_for(stopped.wait(), 30)
        info = await backend.runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.CANCELLED
    assert info.attempts == 1


# -- progress and steps -----------------------------------------------------------------------
async def test_progress_is_visible_while_running_and_100_at_the_end(backend: Backend) -> None:
    release = asyncio.Event()

    async def report(ctx: JobContext, data: dict[str, Any]) -> None:
        await ctx.set_progress(40, "crunching")
        await release.wait()

    backend.registry.add("report", report)
    async with backend.worker():
        handle = await backend.runner.schedule_job("report")
        info = await eventually(
            lambda: backend.runner.get_job_status(handle.job_id),
            lambda i: i is not None and i.progress == 40,
            what="progress 40",
        )
        assert info.progress_message == "crunching"
        assert info.status is JobStatus.PROCESSING
        release.set()
        done = await backend.runner.wait_for_job(handle.job_id, timeout=30)
    assert done.status is JobStatus.COMPLETED
    assert done.progress == 100


async def test_progress_out_of_range_fails_the_attempt(backend: Backend) -> None:
    async def wrong(ctx: JobContext, data: dict[str, Any]) -> None:
        await ctx.set_progress(140)

    backend.registry.add("wrong", wrong, retry=RetryPolicy(max_attempts=1))
    [info] = await backend.run(await backend.runner.schedule_job("wrong"))
    assert info.status is JobStatus.FAILED
    assert info.error is not None
    assert info.error.type.endswith("InvalidArgumentError")


async def test_steps_are_recorded_with_results_and_errors(backend: Backend) -> None:
    async def pipeline(ctx: JobContext, data: dict[str, Any]) -> str:
        async with ctx.step("fetch") as step:
            step.result = {"rows": 3}
        try:
            async with ctx.step("enrich"):
                raise LookupError("no such customer")
        except LookupError:
            pass
        async with ctx.step("store"):
            pass
        return "done"

    backend.registry.add("pipeline", pipeline)
    handle = await backend.runner.schedule_job("pipeline")
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    details = await backend.runner.get_job_details(handle.job_id)
    assert details is not None
    steps = [s for s in details.steps if s.step_name != "attempt"]
    assert [(s.step_name, s.status) for s in steps] == [
        ("fetch", JobStatus.COMPLETED),
        ("enrich", JobStatus.FAILED),
        ("store", JobStatus.COMPLETED),
    ]
    assert steps[0].result == {"rows": 3}
    assert steps[0].retry_count == 1
    assert steps[1].result["message"] == "no such customer"


# -- tenancy and singletons -------------------------------------------------------------------
async def test_tenants_cannot_see_or_touch_each_others_jobs(backend: Backend) -> None:
    async def noop(ctx: JobContext, data: dict[str, Any]) -> str:
        return str(ctx.tenant)

    backend.registry.add("noop", noop)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    handle = await backend.runner.schedule_job("noop", {}, tenant=alice)
    assert await backend.runner.get_job_status(handle.job_id, tenant=bob) is None
    assert await backend.runner.get_job_status(handle.job_id) is None  # the system tenant
    assert await backend.runner.get_job_details(handle.job_id, tenant=bob) is None
    assert not await backend.runner.cancel_job(handle.job_id, tenant=bob)
    assert not await backend.runner.retry_job(handle.job_id, tenant=bob)
    page = await backend.runner.list_jobs(tenant=bob)
    assert page.jobs == []
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == str(alice)
    assert info.tenant == alice


async def test_a_singleton_key_allows_one_live_job_per_tenant(backend: Backend) -> None:
    async def sync_account(ctx: JobContext, data: dict[str, Any]) -> int:
        return int(data["n"])

    backend.registry.add("sync-account", sync_account)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    first = await backend.runner.schedule_job(
        "sync-account", {"n": 1}, tenant=tenant, singleton_key="acct-1"
    )
    second = await backend.runner.schedule_job(
        "sync-account", {"n": 2}, tenant=tenant, singleton_key="acct-1"
    )
    elsewhere = await backend.runner.schedule_job(
        "sync-account", {"n": 3}, tenant=other, singleton_key="acct-1"
    )
    assert first.created
    assert not second.created
    assert second.job_id == first.job_id
    assert elsewhere.created
    assert elsewhere.job_id != first.job_id
    [done, _] = await backend.run(first, elsewhere)
    assert done.result == 1
    # Once the holder is final, the key is free again.
    third = await backend.runner.schedule_job(
        "sync-account", {"n": 4}, tenant=tenant, singleton_key="acct-1"
    )
    assert third.created
    assert third.job_id != first.job_id


# -- monitoring -------------------------------------------------------------------------------
async def test_list_jobs_pages_newest_first_and_metrics_count(backend: Backend) -> None:
    async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    backend.registry.add("noop", noop)
    tenant = uuid.uuid4()
    handles = [await backend.runner.schedule_job("noop", {"i": i}, tenant=tenant) for i in range(3)]
    await backend.run(*handles)
    first = await backend.runner.list_jobs(tenant=tenant, limit=2)
    assert len(first.jobs) == 2
    assert first.next_cursor is not None
    rest = await backend.runner.list_jobs(tenant=tenant, limit=2, cursor=first.next_cursor)
    listed = [j.job_id for j in first.jobs + rest.jobs]
    assert listed == [h.job_id for h in reversed(handles)]
    assert rest.next_cursor is None
    metrics = await backend.runner.get_metrics(tenant=tenant)
    assert metrics.by_status["completed"] == 3
    assert metrics.success_rate == 1.0


_FAST_ARGS = {"initial_interval": 0.01, "max_interval": 0.05, "jitter": 0.0}


@pytest.mark.parametrize(
    "filters",
    [
        {"cursor": 123},
        {"cursor": "not a cursor"},
        {"status": 5},
        {"status": []},
        {"status": ["done"]},
        {"search": ""},
        {"name": "x" * 201},
        {"created_after": datetime(2024, 1, 1)},
        {"limit": 0},
    ],
    ids=repr,
)
async def test_list_jobs_refuses_malformed_filters_alike(
    backend: Backend, filters: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError):
        await backend.runner.list_jobs(**filters)
