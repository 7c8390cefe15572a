"""Conformance: every claimed attempt ends in exactly one recorded outcome, whatever the handler
does (issue 13), on every backend, with the job's own stored policy deciding retries.

Each case is a handler behaviour and the outcome the execution core must record for it. The
property-based test over a real PostgreSQL with worker kills is tests/test_attempt_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

import pytest

import jobrunner._execution as execution
from jobrunner import JobContext, JobStatus, RetryPolicy, SyncJobContext

from .conftest import Backend

FAST = RetryPolicy(max_attempts=2, initial_interval=0.05, max_interval=0.1, jitter=0.0)


async def _returns(ctx: JobContext, data: dict[str, Any]) -> Any:
    return {"ok": True}


async def _raises_value_error(ctx: JobContext, data: dict[str, Any]) -> Any:
    raise ValueError("boom")


async def _raises_system_exit(ctx: JobContext, data: dict[str, Any]) -> Any:
    raise SystemExit(3)


async def _raises_keyboard_interrupt(ctx: JobContext, data: dict[str, Any]) -> Any:
    raise KeyboardInterrupt


async def _raises_generator_exit(ctx: JobContext, data: dict[str, Any]) -> Any:
    raise GeneratorExit


async def _raises_own_cancelled_error(ctx: JobContext, data: dict[str, Any]) -> Any:
    # As TaskGroup and many libraries do: awaiting a future cancelled elsewhere.
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.cancel()
    await fut


async def _hangs(ctx: JobContext, data: dict[str, Any]) -> Any:
    await asyncio.Event().wait()


async def _swallows_cancellation(ctx: JobContext, data: dict[str, Any]) -> Any:
    # Ignores the timeout's cancellation, then ends by itself a little later.
    for _ in range(2):
        with contextlib.suppress(asyncio.CancelledError):  # swallowed on purpose
            await asyncio.sleep(1.5)
    return "late"


async def _returns_unstorable(ctx: JobContext, data: dict[str, Any]) -> Any:
    return {"x": math.nan}


async def _returns_too_large(ctx: JobContext, data: dict[str, Any]) -> Any:
    return "x" * 4096


def _sync_raises_system_exit(ctx: SyncJobContext, data: dict[str, Any]) -> Any:
    raise SystemExit(4)


def _sync_raises_keyboard_interrupt(ctx: SyncJobContext, data: dict[str, Any]) -> Any:
    raise KeyboardInterrupt


def _sync_returns(ctx: SyncJobContext, data: dict[str, Any]) -> Any:
    return [1, 2]


#: (handler, final status, attempts, error type suffix or None)
CASES: dict[str, tuple[Callable[..., Any], JobStatus, int, str | None]] = {
    "returns": (_returns, JobStatus.COMPLETED, 1, None),
    "sync-returns": (_sync_returns, JobStatus.COMPLETED, 1, None),
    "raises-exception": (_raises_value_error, JobStatus.FAILED, 2, "ValueError"),
    "raises-system-exit": (_raises_system_exit, JobStatus.FAILED, 2, "SystemExit"),
    "raises-keyboard-interrupt": (
        _raises_keyboard_interrupt,
        JobStatus.FAILED,
        2,
        "KeyboardInterrupt",
    ),
    "raises-generator-exit": (_raises_generator_exit, JobStatus.FAILED, 2, "GeneratorExit"),
    "raises-own-cancelled-error": (
        _raises_own_cancelled_error,
        JobStatus.FAILED,
        2,
        "CancelledError",
    ),
    "sync-raises-system-exit": (_sync_raises_system_exit, JobStatus.FAILED, 2, "SystemExit"),
    "sync-raises-keyboard-interrupt": (
        _sync_raises_keyboard_interrupt,
        JobStatus.FAILED,
        2,
        "KeyboardInterrupt",
    ),
    "hangs-past-timeout": (_hangs, JobStatus.FAILED, 2, "JobTimeoutError"),
    "swallows-cancellation": (_swallows_cancellation, JobStatus.FAILED, 2, "JobTimeoutError"),
    "returns-unstorable": (_returns_unstorable, JobStatus.FAILED, 1, "NonRetryable"),
    "returns-too-large": (_returns_too_large, JobStatus.FAILED, 1, "NonRetryable"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_handler_behaviour_ends_in_one_recorded_outcome(
    backend: Backend, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, status, attempts, error_type = CASES[case]
    monkeypatch.setattr(execution, "CANCEL_GRACE", 0.2)
    monkeypatch.setattr(execution, "MAX_RESULT_BYTES", 1024)
    backend.registry.add("behave", handler, retry=FAST, timeout=0.5)
    handle = await backend.runner.schedule_job("behave", {})
    [info] = await backend.run(handle)
    assert info.status is status, info.error
    assert info.attempts == attempts
    if error_type is None:
        assert info.error is None
    else:
        assert info.error is not None and info.error.type.endswith(error_type), info.error
    details = await backend.runner.get_job_details(handle.job_id)
    assert details is not None
    rows = [s for s in details.steps if s.step_name == "attempt"]
    # Exactly one recorded outcome per attempt.
    assert sorted(r.retry_count for r in rows) == list(range(1, attempts + 1))
    # The worker survived: the next job still runs.
    backend.registry.add("after", _returns)
    [after] = await backend.run(await backend.runner.schedule_job("after", {}))
    assert after.status is JobStatus.COMPLETED


async def test_the_policy_stored_at_enqueue_decides_not_the_workers_registry(
    backend: Backend,
) -> None:
    async def flaky(ctx: JobContext, data: dict[str, Any]) -> Any:
        raise ValueError(f"attempt {ctx.attempt} of {ctx.max_attempts}")

    backend.registry.add("flaky", flaky, retry=FAST)
    handle = await backend.runner.schedule_job("flaky", {})
    # A worker with another registry version: the same handler now allows five attempts.
    backend.registry.add(
        "flaky",
        flaky,
        retry=RetryPolicy(max_attempts=5, initial_interval=0.05, max_interval=0.1, jitter=0.0),
    )
    [info] = await backend.run(handle)
    assert info.status is JobStatus.FAILED
    assert info.attempts == FAST.max_attempts
    assert info.error is not None and info.error.message == "attempt 2 of 2"
