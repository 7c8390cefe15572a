"""A handler whose behaviour per attempt the test chooses: for subprocess workers started by
tests/test_attempt_lifecycle.py (``jobrunner-worker --app apps.hostile_app``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

from jobrunner import JobContext, RetryPolicy, job

#: Attempts and timeout of ``behave`` jobs (the test checks attempts against these).
POLICY = RetryPolicy(max_attempts=3, initial_interval=0.05, max_interval=0.2, jitter=0.0)
TIMEOUT = 1.0
#: How long ``block-loop`` blocks the event loop: past the test workers' 1.5 s lease.
BLOCK_SECONDS = 2.5


async def _act(kind: str) -> Any:
    if kind == "return":
        return {"ok": True}
    if kind == "slow":
        await asyncio.sleep(0.3)
        return {"ok": "slow"}
    if kind == "raise":
        raise ValueError("boom")
    if kind == "system-exit":
        raise SystemExit(2)
    if kind == "keyboard-interrupt":
        raise KeyboardInterrupt
    if kind == "generator-exit":
        raise GeneratorExit
    if kind == "cancelled":
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut
    if kind == "hang":
        await asyncio.Event().wait()
    if kind == "swallow":
        for _ in range(3):
            with contextlib.suppress(asyncio.CancelledError):  # swallowed on purpose
                await asyncio.sleep(1.0)
        return {"ok": "late"}
    if kind == "unstorable":
        return {"x": math.nan}
    if kind == "block-loop":
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 - blocking the loop is the behaviour under test
        return {"ok": "blocked"}
    raise AssertionError(f"unknown behaviour {kind}")


@job("behave", retry=POLICY, timeout=TIMEOUT)
async def behave(ctx: JobContext, data: dict[str, Any]) -> Any:
    """Act as ``data["kinds"][attempt - 1]`` says (the last kind repeats)."""
    kinds: list[str] = data["kinds"]
    kind = kinds[min(ctx.attempt, len(kinds)) - 1]
    async with ctx.step(f"attempt-{ctx.attempt}-{kind}"):
        return await _act(kind)


@job("swallow-forever", timeout=600, retry=RetryPolicy(max_attempts=1))
async def swallow_forever(ctx: JobContext, data: dict[str, Any]) -> None:
    """Ignores every cancellation, for ever: the worker must still exit on SIGTERM."""
    await ctx.set_progress(10, "started")
    while True:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed on purpose
            await asyncio.sleep(3600)
