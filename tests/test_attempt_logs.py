"""Every attempt is logged by the execution core (the same on every backend), with the job's
identity in the record; a timed-out handler's error shows where it was (issue 16)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from apps.helpers import fetch
from jobrunner import JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

LOGGER = "jobrunner.execution"


def records_of(caplog: pytest.LogCaptureFixture, job_id: object) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "job_id", None) == str(job_id)]


async def _deep_wait(release: asyncio.Event) -> None:
    await release.wait()


async def _stuck_in_helper(release: asyncio.Event) -> None:
    await _deep_wait(release)


async def test_async_timeout_records_the_handlers_stack(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    release = asyncio.Event()

    async def hangs(ctx: Any, data: dict[str, Any]) -> None:
        await _stuck_in_helper(release)

    registry.add("hangs", hangs, timeout=0.3, retry=RetryPolicy(max_attempts=1))
    handle = await runner.schedule_job("hangs", {})
    async with running_worker(runner):
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.FAILED
    assert info.error is not None and info.error.type.endswith("JobTimeoutError")
    trace = info.error.traceback or ""
    assert "The handler was here when it timed out" in trace
    # From the handler down to the await it hung in, with the source lines.
    assert trace.index("in hangs") < trace.index("in _stuck_in_helper")
    assert trace.index("in _stuck_in_helper") < trace.index("in _deep_wait")
    assert "await release.wait()" in trace
    assert "_call_async" not in trace  # jobrunner's own wrapper is not the handler's stack

    (failed,) = [r for r in records_of(caplog, handle.job_id) if r.levelno >= logging.WARNING]
    assert failed.levelno == logging.ERROR
    assert "timed out after 0.3 s" in failed.getMessage()
    assert failed.job_name == "hangs"  # type: ignore[attr-defined]
    assert failed.tenant == str(handle.tenant)  # type: ignore[attr-defined]
    assert failed.attempt == 1  # type: ignore[attr-defined]
    assert failed.timed_out is True  # type: ignore[attr-defined]
    assert failed.exc_info is not None
    text = logging.Formatter().formatException(failed.exc_info)
    assert "in _deep_wait" in text  # the stack is in the logged exception too
    (started,) = [r for r in records_of(caplog, handle.job_id) if r.levelno == logging.DEBUG]
    assert "attempt 1/1 started" in started.getMessage()


def _blocking_helper(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.01)


async def test_sync_timeout_records_the_threads_stack(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    stop = threading.Event()

    def blocks(ctx: Any, data: dict[str, Any]) -> None:
        _blocking_helper(stop)

    registry.add("blocks", blocks, timeout=0.3, retry=RetryPolicy(max_attempts=1))
    handle = await runner.schedule_job("blocks", {})
    try:
        async with running_worker(runner):
            info = await runner.wait_for_job(handle.job_id, timeout=30)
    finally:
        stop.set()
    trace = (info.error.traceback if info.error else None) or ""
    assert "The handler was here when it timed out" in trace
    assert trace.index("in blocks") < trace.index("in _blocking_helper")
    assert "time.sleep(0.01)" in trace
    assert "concurrent/futures" not in trace  # the pool's frames are not the handler's


async def test_retry_and_final_failure_are_logged_with_the_next_run_time(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def fails(ctx: Any, data: dict[str, Any]) -> None:
        raise ValueError(f"bad input on attempt {ctx.attempt}")

    registry.add("fails", fails, retry=RetryPolicy(max_attempts=2, initial_interval=0.05))
    handle = await runner.schedule_job("fails", {})
    async with running_worker(runner):
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.FAILED
    retry, final = records_of(caplog, handle.job_id)
    assert retry.levelno == logging.WARNING
    assert "attempt 1/2 failed: ValueError: bad input on attempt 1" in retry.getMessage()
    assert "retrying in" in retry.getMessage()
    assert retry.outcome == "retrying"  # type: ignore[attr-defined]
    assert 0 < retry.retry_in <= 1  # type: ignore[attr-defined]
    assert retry.next_run_at in retry.getMessage()  # type: ignore[attr-defined]
    assert retry.exc_info is not None and retry.exc_info[0] is ValueError
    assert final.levelno == logging.ERROR
    assert "attempt 2/2 failed: ValueError" in final.getMessage()
    assert "failed for good" in final.getMessage()
    assert final.outcome == "failed"  # type: ignore[attr-defined]
    assert final.runner_type == "postgres"  # type: ignore[attr-defined]


async def test_cancel_and_lease_loss_are_logged(
    runner: PostgresJobRunner,
    registry: JobHandlerRegistry,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    started: dict[str, asyncio.Event] = {"cancel-me": asyncio.Event(), "lose-me": asyncio.Event()}

    async def waits(ctx: Any, data: dict[str, Any]) -> None:
        started[data["key"]].set()
        await asyncio.Event().wait()

    registry.add("waits", waits, retry=RetryPolicy(max_attempts=1))
    lost_logged = asyncio.Event()

    class LeaseLossSeen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "outcome", None) == "lease_lost":
                lost_logged.set()

    seen = LeaseLossSeen()
    logging.getLogger(LOGGER).addHandler(seen)
    request.addfinalizer(lambda: logging.getLogger(LOGGER).removeHandler(seen))
    cancel_me = await runner.schedule_job("waits", {"key": "cancel-me"})
    lose_me = await runner.schedule_job("waits", {"key": "lose-me"})
    async with running_worker(runner, lease_seconds=1.5, heartbeat_interval=0.2):
        await asyncio.wait_for(started["cancel-me"].wait(), 30)
        await asyncio.wait_for(started["lose-me"].wait(), 30)
        assert await runner.cancel_job(cancel_me.job_id)
        # Another worker took the job over: the lease token moved on.
        await fetch(
            runner,
            "UPDATE {schema}.jobs SET lease_token = lease_token + 1, worker_id = gen_random_uuid()"
            " WHERE job_id = %s RETURNING job_id",
            lose_me.job_id,
        )
        await runner.wait_for_job(cancel_me.job_id, timeout=30)
        await asyncio.wait_for(lost_logged.wait(), 30)
    (cancelled,) = records_of(caplog, cancel_me.job_id)
    assert cancelled.levelno == logging.INFO
    assert "cancelled; its handler was stopped" in cancelled.getMessage()
    assert cancelled.outcome == "cancelled"  # type: ignore[attr-defined]
    (lost,) = records_of(caplog, lose_me.job_id)
    assert lost.levelno == logging.WARNING
    assert "lost its lease" in lost.getMessage()
    assert lost.outcome == "lease_lost"  # type: ignore[attr-defined]
    assert lost.job_name == "waits"  # type: ignore[attr-defined]
