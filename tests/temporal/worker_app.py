"""Handlers for the worker-process tests (``jobrunner-worker --app temporal.worker_app``)."""

from __future__ import annotations

import asyncio
from typing import Any

from jobrunner import JobContext, RetryPolicy, job


@job("proc-echo")
async def echo(ctx: JobContext, data: dict[str, Any]) -> Any:
    return {"echo": data.get("value"), "attempt": ctx.attempt}


@job("proc-stuck-once", retry=RetryPolicy(max_attempts=3, initial_interval=0.1, jitter=0.0))
async def stuck_once(ctx: JobContext, data: dict[str, Any]) -> Any:
    """The first attempt never ends (its worker gets killed); later attempts finish."""
    if ctx.attempt == 1:
        await ctx.set_progress(10, "first attempt started")
        await asyncio.Event().wait()
    return {"finished_on_attempt": ctx.attempt}
