"""Conformance: concurrent cancels and retries end consistently on every backend.

Whatever order the calls land in, a job ends in one final state that agrees with what each
call returned: a cancel that returned ``True`` leaves the job cancelled (a handler finishing
at the same moment cannot complete it), one that returned ``False`` found it already final;
of two calls racing for the same transition exactly one wins.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobrunner import JobContext, JobStatus, NonRetryable, RetryPolicy

from .conftest import FAST_RETRY, Backend, eventually, final


async def test_two_cancels_of_one_job_succeed_once(backend: Backend) -> None:
    async def never(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    backend.registry.add("never", never)
    handle = await backend.runner.schedule_job("never")
    results = await asyncio.gather(
        backend.runner.cancel_job(handle.job_id), backend.runner.cancel_job(handle.job_id)
    )
    assert sorted(results) == [False, True]
    info = await backend.runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.CANCELLED


async def test_two_retries_of_one_failed_job_run_it_once_more(backend: Backend) -> None:
    calls: list[int] = []

    async def fails_first(ctx: JobContext, data: dict[str, Any]) -> str:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise NonRetryable("first run fails")
        return "second run"

    backend.registry.add("fails_first", fails_first)
    handle = await backend.runner.schedule_job("fails_first")
    [failed] = await backend.run(handle)
    assert failed.status is JobStatus.FAILED
    results = await asyncio.gather(
        backend.runner.retry_job(handle.job_id), backend.runner.retry_job(handle.job_id)
    )
    assert sorted(results) == [False, True]
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == "second run"
    assert calls == [1, 1]  # one more run, attempts counted from 1 again


async def test_cancels_racing_completions_agree_with_their_answers(backend: Backend) -> None:
    async def quick(ctx: JobContext, data: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        return int(data["n"])

    backend.registry.add("quick", quick, retry=RetryPolicy(max_attempts=1))
    async with backend.worker():
        handles = [await backend.runner.schedule_job("quick", {"n": n}) for n in range(12)]
        # Cancels land while the jobs are queued, running or already done.
        answers = await asyncio.gather(*(backend.runner.cancel_job(h.job_id) for h in handles))
        infos = [await backend.runner.wait_for_job(h.job_id, timeout=30) for h in handles]
    for n, (cancelled, info) in enumerate(zip(answers, infos, strict=True)):
        if cancelled:
            assert info.status is JobStatus.CANCELLED, (n, info)
            assert info.result is None, (n, info)
        else:
            assert info.status is JobStatus.COMPLETED, (n, info)
            assert info.result == n


async def test_a_retry_racing_a_cancel_ends_as_the_answers_say(backend: Backend) -> None:
    runs: list[int] = []

    async def flaky(ctx: JobContext, data: dict[str, Any]) -> str:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            raise NonRetryable("first run fails")
        return "ran again"

    backend.registry.add("flaky", flaky)
    handle = await backend.runner.schedule_job("flaky")
    [failed] = await backend.run(handle)
    assert failed.status is JobStatus.FAILED
    retried, cancelled = await asyncio.gather(
        backend.runner.retry_job(handle.job_id), backend.runner.cancel_job(handle.job_id)
    )
    # A failed job cannot be cancelled, so the cancel succeeds only after the retry queued it.
    assert retried
    if cancelled:
        info = await backend.runner.wait_for_job(handle.job_id, timeout=30)
        assert info.status is JobStatus.CANCELLED
    else:
        [info] = await backend.run(handle)
        assert info.status is JobStatus.COMPLETED
        assert info.result == "ran again"


async def test_retry_of_a_live_job_is_refused_and_changes_nothing(backend: Backend) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold(ctx: JobContext, data: dict[str, Any]) -> str:
        started.set()
        await release.wait()
        return "held"

    backend.registry.add("hold", hold)
    queued = await backend.runner.schedule_job("hold")
    assert not await backend.runner.retry_job(queued.job_id)  # queued: nothing to retry
    async with backend.worker():
        await asyncio.wait_for(started.wait(), 30)
        await eventually(
            lambda: backend.runner.get_job_status(queued.job_id),
            final(JobStatus.PROCESSING),
            what="processing",
        )
        assert not await backend.runner.retry_job(queued.job_id)  # running
        release.set()
        info = await backend.runner.wait_for_job(queued.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 1


async def test_cancelling_a_job_waiting_for_its_retry_stops_its_retries(backend: Backend) -> None:
    failed_once = asyncio.Event()
    calls: list[int] = []

    async def always_fails(ctx: JobContext, data: dict[str, Any]) -> None:
        calls.append(ctx.attempt)
        failed_once.set()
        raise RuntimeError("still down")

    backend.registry.add(
        "always_fails",
        always_fails,
        retry=RetryPolicy(max_attempts=5, initial_interval=30, max_interval=30, jitter=0.0),
    )
    async with backend.worker():
        handle = await backend.runner.schedule_job("always_fails")
        await asyncio.wait_for(failed_once.wait(), 30)
        await eventually(
            lambda: backend.runner.get_job_status(handle.job_id),
            final(JobStatus.RETRYING),
            what="retrying",
        )
        assert await backend.runner.cancel_job(handle.job_id, reason="give up")
        info = await backend.runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.CANCELLED
    assert calls == [1]
    assert not await backend.runner.cancel_job(handle.job_id)


async def test_a_cancel_racing_a_failing_attempt_is_final(backend: Backend) -> None:
    """The attempt fails (and would be retried) as the cancel lands: the job ends cancelled
    and no later attempt revives it."""
    started = asyncio.Event()
    fail = asyncio.Event()
    calls: list[int] = []

    async def fails_on_signal(ctx: JobContext, data: dict[str, Any]) -> None:
        calls.append(ctx.attempt)
        started.set()
        await fail.wait()
        raise RuntimeError("failing as the cancel lands")

    backend.registry.add("fails_on_signal", fails_on_signal, retry=FAST_RETRY)
    async with backend.worker():
        handle = await backend.runner.schedule_job("fails_on_signal")
        await asyncio.wait_for(started.wait(), 30)
        fail.set()
        assert await backend.runner.cancel_job(handle.job_id)  # processing or retrying: live
        info = await backend.runner.wait_for_job(handle.job_id, timeout=30)
        assert info.status is JobStatus.CANCELLED
        tried = len(calls)
        # A retry already claimed when the cancel landed is stopped, not run to completion.
        again = await backend.runner.wait_for_job(handle.job_id, timeout=30)
    assert again.status is JobStatus.CANCELLED
    assert tried <= 2
