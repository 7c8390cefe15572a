"""Awaiting a job's result (issue 16): ``ScheduledJob.result()`` and ``wait_for_job`` are woken
by the database's notification (migration 0008), not by polling; typed errors for failed and
cancelled jobs, ``JobTimeoutError`` on timeout; the sync twin and the in-memory runner too."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from apps.helpers import fetch
from jobrunner import (
    JobCancelledError,
    JobFailedError,
    JobHandlerRegistry,
    JobNotFoundError,
    JobRunnerError,
    JobStatus,
    JobTimeoutError,
    RetryPolicy,
    ScheduledJob,
    SyncJobRunner,
)
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import InMemoryJobRunner, running_worker

#: A poll interval no test could wait out: a waiter that returns did not poll.
NO_POLLING = 3600.0


async def test_result_returns_the_handlers_value(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def double(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
        return {"twice": data["n"] * 2}

    registry.add("double", double)
    handle = await runner.schedule_job("double", {"n": 21})
    async with running_worker(runner):
        assert await handle.result(timeout=30) == {"twice": 42}
        # A handle of a job that is already final answers at once.
        assert await handle.result(timeout=1) == {"twice": 42}


async def test_failed_and_cancelled_jobs_raise_typed_errors(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    started = asyncio.Event()

    async def broken(ctx: Any, data: dict[str, Any]) -> None:
        raise KeyError("customer 7")

    async def slow(ctx: Any, data: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    registry.add("broken", broken, retry=RetryPolicy(max_attempts=1))
    registry.add("slow", slow)
    failing = await runner.schedule_job("broken", {})
    running = await runner.schedule_job("slow", {})
    async with running_worker(runner):
        with pytest.raises(JobFailedError) as failed:
            await failing.result(timeout=30)
        assert isinstance(failed.value, JobRunnerError)
        assert failed.value.error is not None and failed.value.error.type == "KeyError"
        assert "customer 7" in str(failed.value) and str(failing.job_id) in str(failed.value)
        assert failed.value.job.status is JobStatus.FAILED

        await asyncio.wait_for(started.wait(), 30)
        waiting = asyncio.create_task(running.result(timeout=30))
        await asyncio.sleep(0)
        assert await runner.cancel_job(running.job_id, reason="customer left")
        with pytest.raises(JobCancelledError, match="was cancelled: customer left") as cancelled:
            await waiting
        assert cancelled.value.reason == "customer left"


async def test_timeout_raises_job_timeout_error_and_the_job_goes_on(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("never-run", lambda ctx, data: None)
    handle = await runner.schedule_job("never-run", {})
    started = time.monotonic()
    with pytest.raises(JobTimeoutError, match=f"job {handle.job_id} was not final within 0.2 s"):
        await handle.result(timeout=0.2)
    assert time.monotonic() - started < 5
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.QUEUED


async def test_unbound_handle_and_unknown_job_are_typed_errors(runner: PostgresJobRunner) -> None:
    import uuid

    with pytest.raises(JobRunnerError, match="not returned by a runner"):
        await ScheduledJob(job_id=uuid.uuid4(), external_id=None).result()
    with pytest.raises(JobNotFoundError):
        await runner.wait_for_job(uuid.uuid4(), timeout=5, poll_interval=NO_POLLING)


async def test_waiter_wakes_within_milliseconds_without_polling(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    release = asyncio.Event()

    async def gated(ctx: Any, data: dict[str, Any]) -> str:
        await release.wait()
        return "done"

    registry.add("gated", gated)
    handle = await runner.schedule_job("gated", {})
    async with running_worker(runner, flush_interval=0):
        waiter = asyncio.create_task(
            runner.wait_for_job(handle.job_id, timeout=60, poll_interval=NO_POLLING)
        )
        await asyncio.wait_for(runner.db.waiters.listening_ready(), 30)
        await asyncio.sleep(0.2)  # the waiter has read the job once and sleeps on its future
        release.set()
        info = await waiter
        woke = time.time()
    assert info.status is JobStatus.COMPLETED and info.result == "done"
    (row,) = await fetch(
        runner,
        "SELECT extract(epoch FROM clock_timestamp()) - extract(epoch FROM now()) AS skew,"
        " extract(epoch FROM completed_at) AS completed FROM {schema}.jobs WHERE job_id = %s",
        handle.job_id,
    )
    latency = woke - float(row["completed"])
    print(f"waiter woke {latency * 1000:.1f} ms after the completing transaction began")
    assert latency < 0.25, latency


async def test_a_thousand_waiters_share_one_listening_connection(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def quick(ctx: Any, data: dict[str, Any]) -> int:
        return int(data["i"])

    registry.add("quick", quick)
    handles = await runner.schedule_jobs("quick", [{"i": i} for i in range(250)])
    waiters = [
        asyncio.create_task(h.result(timeout=120))
        for h in handles
        for _ in range(4)  # several waiters on one job are all woken
    ]
    await asyncio.wait_for(runner.db.waiters.listening_ready(), 30)
    channel = f"{runner.schema}_done"
    listeners = await fetch(
        runner,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE query = %s",
        f'LISTEN "{channel}"',
    )
    assert listeners[0]["n"] == 1
    async with running_worker(runner, concurrency=50):
        results = await asyncio.gather(*waiters)
    assert results == [i for i in range(250) for _ in range(4)]


def test_sync_twin_result_blocks_until_the_job_finishes(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    def shout(ctx: Any, data: dict[str, Any]) -> str:
        return str(data["word"]).upper()

    def rejects(ctx: Any, data: dict[str, Any]) -> None:
        raise ValueError("no")

    registry.add("shout", shout)
    registry.add("rejects", rejects, retry=RetryPolicy(max_attempts=1))
    sync = SyncJobRunner(PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry))
    try:
        handle = sync.schedule_job("shout", {"word": "hi"})
        bad = sync.schedule_jobs("rejects", [{}])[0]
        with pytest.raises(JobTimeoutError):
            handle.result(timeout=0.1)
        worker = sync.create_worker()
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            assert handle.result(timeout=30) == "HI"
            with pytest.raises(JobFailedError, match="ValueError: no"):
                bad.result(timeout=30)
        finally:
            worker.stop()
            thread.join(30)
    finally:
        sync.close()


async def test_in_memory_runner_results(registry: JobHandlerRegistry) -> None:
    async def echo(ctx: Any, data: dict[str, Any]) -> Any:
        return data

    registry.add("echo", echo)
    runner = InMemoryJobRunner(registry=registry)
    handle = await runner.schedule_job("echo", {"a": 1})
    async with running_worker(runner):
        assert await handle.result(timeout=10) == {"a": 1}
