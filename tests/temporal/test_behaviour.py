"""Behaviour the Temporal backend shares with the PostgreSQL one.

Written against the backend-neutral fixtures ``runner``, ``worker`` and ``registry`` (see
conftest.py) and the shared helpers in ``tests/apps/helpers.py``, so these tests can move into
the cross-backend conformance suite as they are.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apps.helpers import details, eventually, fetch, install_status_log, job_row
from jobrunner import (
    HandlerNotFoundError,
    InvalidArgumentError,
    JobContext,
    JobHandlerRegistry,
    JobStatus,
    NonRetryable,
    Retry,
    RetryPolicy,
)

pytestmark = pytest.mark.temporal

FAST = {"initial_interval": 0.05, "max_interval": 0.2, "jitter": 0.0}


async def wait_processing(runner: Any, job_id: uuid.UUID, tenant: Any = None) -> Any:
    return await eventually(
        lambda: runner.get_job_status(job_id, tenant=tenant),
        lambda info: info is not None and info.status is JobStatus.PROCESSING,
        what="processing",
    )


async def test_schedule_complete_and_result(
    runner: Any, worker: Any, registry: JobHandlerRegistry
) -> None:
    async def add(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return {"sum": data["a"] + data["b"], "attempt": ctx.attempt}

    registry.add("add", add)
    tenant = uuid.uuid4()
    handle = await runner.schedule_job(
        "add", {"a": 2, "b": 3}, tenant=tenant, metadata={"source": "test"}
    )
    assert handle.created
    assert handle.tenant == tenant
    info = await runner.wait_for_job(handle.job_id, tenant=tenant, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == {"sum": 5, "attempt": 1}
    assert info.attempts == 1
    assert info.progress == 100
    assert info.error is None
    assert info.metadata == {"source": "test"}
    assert info.started_at is not None
    assert info.completed_at is not None
    attempts = await details(runner, handle.job_id, "attempt")
    assert [(a["status"], a["retry_count"]) for a in attempts] == [("completed", 1)]
    job = await runner.get_job_details(handle.job_id, tenant=tenant)
    assert job is not None
    assert job.data == {"a": 2, "b": 3}


async def test_retries_follow_the_policy_without_flapping(
    runner: Any, worker: Any, registry: JobHandlerRegistry
) -> None:
    await install_status_log(runner)
    calls: list[int] = []

    async def flaky(ctx: JobContext, data: dict[str, Any]) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"boom {ctx.attempt}")
        return "ok"

    registry.add("flaky", flaky, retry=RetryPolicy(max_attempts=3, **FAST))
    handle = await runner.schedule_job("flaky", {})
    info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == "ok"
    assert calls == [1, 2, 3]
    assert info.attempts == 3
    log = await fetch(
        runner,
        "SELECT new_status, attempts FROM {schema}.status_log WHERE job_id = %s ORDER BY seq",
        handle.job_id,
    )
    statuses = [r["new_status"] for r in log]
    assert statuses == [
        "queued",
        "processing",
        "retrying",
        "processing",
        "retrying",
        "processing",
        "completed",
    ], statuses
    attempts = await details(runner, handle.job_id, "attempt")
    assert [(a["status"], a["retry_count"]) for a in attempts] == [
        ("failed", 1),
        ("failed", 2),
        ("completed", 3),
    ]
    assert "boom 1" in attempts[0]["result"]["message"]


async def test_exhausted_retries_fail_with_the_last_error(
    runner: Any, worker: Any, registry: JobHandlerRegistry
) -> None:
    async def broken(ctx: JobContext, data: dict[str, Any]) -> None:
        raise ValueError(f"bad input {ctx.attempt}")

    registry.add("broken", broken, retry=RetryPolicy(max_attempts=2, **FAST))
    handle = await runner.schedule_job("broken", {})
    info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.FAILED
    assert info.attempts == 2
    assert info.error is not None
    assert info.error.type == "ValueError"
    assert info.error.message == "bad input 2"
    assert "Traceback" in (info.error.traceback or "")


async def test_non_retryable(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    async def refuse(ctx: JobContext, data: dict[str, Any]) -> None:
        raise NonRetryable("never works")

    async def listed(ctx: JobContext, data: dict[str, Any]) -> None:
        raise KeyError("missing")

    registry.add("refuse", refuse, retry=RetryPolicy(max_attempts=5, **FAST))
    registry.add(
        "listed", listed, retry=RetryPolicy(max_attempts=5, non_retryable_errors=[KeyError], **FAST)
    )
    a = await runner.schedule_job("refuse", {})
    b = await runner.schedule_job("listed", {})
    for handle, kind in ((a, "NonRetryable"), (b, "KeyError")):
        info = await runner.wait_for_job(handle.job_id, timeout=60)
        assert info.status is JobStatus.FAILED
        assert info.attempts == 1
        assert info.error is not None
        assert info.error.type.endswith(kind)


async def test_retry_with_delay(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    async def later(ctx: JobContext, data: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            raise Retry(delay=1.0, reason="not yet")
        return ctx.attempt

    registry.add(
        "later", later, retry=RetryPolicy(max_attempts=3, initial_interval=30, max_interval=60)
    )
    handle = await runner.schedule_job("later", {})
    info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == 2
    first, second = await details(runner, handle.job_id, "attempt")
    assert first["status"] == "failed"
    assert first["result"]["message"] == "not yet"
    # The policy's 30 s backoff was replaced by the requested delay: attempt 2 started about
    # a second after attempt 1 failed, never before.
    gap = (
        second["metadata"]["started_at"]
        and datetime.fromisoformat(second["metadata"]["started_at"])
    ) - datetime.fromisoformat(first["metadata"]["next_run_at"])
    assert gap >= timedelta(seconds=-0.2)
    assert gap < timedelta(seconds=25)


async def test_timeout_counts_as_a_failed_attempt(
    runner: Any, worker: Any, registry: JobHandlerRegistry
) -> None:
    async def slow(ctx: JobContext, data: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    registry.add("slow", slow, timeout=0.5, retry=RetryPolicy(max_attempts=2, **FAST))
    handle = await runner.schedule_job("slow", {})
    info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.FAILED
    assert info.attempts == 2
    assert info.error is not None
    assert "JobTimeoutError" in info.error.type


async def test_cancel_running_async_handler(
    runner: Any, worker: Any, registry: JobHandlerRegistry
) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def long(ctx: JobContext, data: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise

    registry.add("long", long)
    tenant = uuid.uuid4()
    handle = await runner.schedule_job("long", {}, tenant=tenant)
    await asyncio.wait_for(started.wait(), 60)
    assert (
        await runner.cancel_job(handle.job_id, tenant=tenant, reason="stop", cancelled_by="ops")
        is True
    )
    await asyncio.wait_for(stopped.wait(), 30)
    info = await runner.get_job_status(handle.job_id, tenant=tenant)
    assert info is not None
    assert info.status is JobStatus.CANCELLED
    assert info.metadata["cancel_reason"] == "stop"
    assert info.metadata["cancelled_by"] == "ops"
    assert await runner.cancel_job(handle.job_id, tenant=tenant) is False
    # a retry starts a clean run: the old cancel is history, not the new run's metadata
    assert await runner.retry_job(handle.job_id, tenant=tenant) is True
    retried = await runner.get_job_status(handle.job_id, tenant=tenant)
    assert retried is not None
    assert "cancel_reason" not in retried.metadata and "cancelled_by" not in retried.metadata
    assert await runner.cancel_job(handle.job_id, tenant=tenant) is True


async def test_cancel_running_sync_handler(
    runner: Any, worker: Any, registry: JobHandlerRegistry
) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    def spin(ctx: Any, data: dict[str, Any]) -> str:
        started.set()
        while not ctx.is_cancelled():
            threading.Event().wait(0.02)
        saw_cancel.set()
        return "stopped early"

    registry.add("spin", spin)
    handle = await runner.schedule_job("spin", {})
    assert await asyncio.to_thread(started.wait, 60)
    assert await runner.cancel_job(handle.job_id) is True
    assert await asyncio.to_thread(saw_cancel.wait, 30)
    info = await runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.CANCELLED
    assert info.result is None


async def test_cancel_delayed_job(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    ran: list[uuid.UUID] = []

    async def never(ctx: JobContext, data: dict[str, Any]) -> None:
        ran.append(ctx.job_id)

    registry.add("never", never)
    handle = await runner.schedule_job_at("never", {}, datetime.now(UTC) + timedelta(hours=1))
    info = await runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.PENDING
    assert await runner.cancel_job(handle.job_id) is True
    info = await runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.CANCELLED
    assert ran == []


async def test_progress_and_steps(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    gate = asyncio.Event()

    async def report(ctx: JobContext, data: dict[str, Any]) -> str:
        async with ctx.step("fetch") as step:
            step.result = {"rows": 3}
        await ctx.set_progress(40, "fetched")
        await gate.wait()
        with pytest.raises(RuntimeError):
            async with ctx.step("flaky-part"):
                raise RuntimeError("part failed")
        return "done"

    registry.add("report", report)
    handle = await runner.schedule_job("report", {})
    mid = await eventually(
        lambda: runner.get_job_status(handle.job_id),
        lambda i: i is not None and i.progress == 40,
        what="progress 40",
    )
    assert mid.progress_message == "fetched"
    assert mid.status is JobStatus.PROCESSING
    gate.set()
    info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.progress == 100
    job = await runner.get_job_details(handle.job_id)
    assert job is not None
    steps = {s.step_name: s for s in job.steps}
    assert steps["fetch"].status is JobStatus.COMPLETED
    assert steps["fetch"].result == {"rows": 3}
    assert steps["fetch"].retry_count == 1
    assert steps["flaky-part"].status is JobStatus.FAILED
    assert steps["attempt"].status is JobStatus.COMPLETED


async def test_tenant_isolation(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    gate = asyncio.Event()

    async def wait(ctx: JobContext, data: dict[str, Any]) -> str:
        await gate.wait()
        return str(ctx.tenant)

    registry.add("wait", wait)
    owner, other = uuid.uuid4(), uuid.uuid4()
    handle = await runner.schedule_job("wait", {}, tenant=owner)
    await wait_processing(runner, handle.job_id, owner)
    assert await runner.get_job_status(handle.job_id, tenant=other) is None
    assert await runner.get_job_details(handle.job_id, tenant=other) is None
    assert await runner.cancel_job(handle.job_id, tenant=other) is False
    assert await runner.get_job_status(handle.job_id) is None  # the system tenant is a tenant
    gate.set()
    info = await runner.wait_for_job(handle.job_id, tenant=owner, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == str(owner)


async def test_singleton_key(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    gate = asyncio.Event()

    async def single(ctx: JobContext, data: dict[str, Any]) -> None:
        await gate.wait()

    registry.add("single", single)
    first = await runner.schedule_job("single", {"n": 1}, singleton_key="k")
    second = await runner.schedule_job("single", {"n": 2}, singleton_key="k")
    assert first.created
    assert not second.created
    assert second.job_id == first.job_id
    assert second.external_id == first.external_id
    other_tenant = await runner.schedule_job("single", {}, singleton_key="k", tenant=uuid.uuid4())
    assert other_tenant.created
    gate.set()
    await runner.wait_for_job(first.job_id, timeout=60)
    third = await runner.schedule_job("single", {"n": 3}, singleton_key="k")
    assert third.created
    assert third.job_id != first.job_id
    await runner.wait_for_job(third.job_id, timeout=60)


async def test_schedule_at_and_bulk(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    async def echo(ctx: JobContext, data: dict[str, Any]) -> Any:
        return data.get("i")

    registry.add("echo", echo)
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    later = await runner.schedule_job_at("echo", {"i": -1}, run_at)
    assert (await job_row(runner, later.job_id))["status"] == "pending"
    many = await runner.schedule_jobs("echo", [{"i": i} for i in range(5)])
    results = [await runner.wait_for_job(h.job_id, timeout=60) for h in many]
    assert [r.result for r in results] == list(range(5))
    info = await runner.wait_for_job(later.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == -1
    assert info.started_at is not None
    assert info.started_at >= run_at - timedelta(seconds=0.5)


async def test_bad_input_writes_nothing(runner: Any, registry: JobHandlerRegistry) -> None:
    async def fine(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("fine", fine)
    with pytest.raises(HandlerNotFoundError):
        await runner.schedule_job("nobody-handles-this", {})
    with pytest.raises(InvalidArgumentError):
        await runner.schedule_job("fine", {"x": object()})
    with pytest.raises(InvalidArgumentError):
        await runner.schedule_job("fine", {}, tenant="not-a-uuid")
    with pytest.raises(InvalidArgumentError):
        await runner.schedule_job_at("fine", {}, datetime.now())  # naive
    rows = await fetch(runner, "SELECT count(*) AS n FROM {schema}.jobs")
    assert rows[0]["n"] == 0


async def test_retry_job_runs_again(runner: Any, worker: Any, registry: JobHandlerRegistry) -> None:
    fail = [True]

    async def once(ctx: JobContext, data: dict[str, Any]) -> str:
        if fail[0]:
            raise NonRetryable("first time")
        return "second time"

    registry.add("once", once)
    handle = await runner.schedule_job("once", {})
    info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.FAILED
    fail[0] = False
    assert await runner.retry_job(handle.job_id) is True
    info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == "second time"
    assert info.attempts == 1
    assert await runner.retry_job(handle.job_id) is False
