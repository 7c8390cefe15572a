"""Handlers for subprocess workers started by tests/test_worker_process.py.

Run as ``jobrunner-worker --app apps.worker_app`` with ``PYTHONPATH`` set to ``tests/``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from jobrunner import JobContext, RetryPolicy, job


@job("proc-block", retry=RetryPolicy(max_attempts=3, initial_interval=0.1), timeout=600)
async def proc_block(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Report that it started, then wait until the test creates ``data["release_file"]``."""
    await ctx.set_progress(10, f"started attempt {ctx.attempt} in {os.getpid()}")
    release = data.get("release_file")
    # Polling a file is the only signal a test can send into another process's handler.
    while release is None or not os.path.exists(release):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@job("proc-echo")
def proc_echo(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A sync handler returning its input and the process id."""
    return {"echo": data, "pid": os.getpid()}


@job("proc-sync-stuck", timeout=600)
def proc_sync_stuck(ctx: Any, data: dict[str, Any]) -> None:
    """A sync handler stuck in blocking work that never checks ``ctx.is_cancelled()``."""
    ctx.set_progress(10, f"started attempt {ctx.attempt} in {os.getpid()}")
    release = data.get("release_file")
    while release is None or not os.path.exists(release):
        time.sleep(0.05)


@job("proc-step-block", retry=RetryPolicy(max_attempts=3, initial_interval=0.1), timeout=600)
async def proc_step_block(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """As ``proc-block``, but waiting inside an open step ``upload`` (a crash leaves it open)."""
    async with ctx.step("upload"):
        await ctx.set_progress(10, f"uploading in {os.getpid()}")
        release = data.get("release_file")
        while release is None or not os.path.exists(release):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.05)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@job("proc-loop")
async def proc_loop(ctx: JobContext, data: dict[str, Any]) -> str:
    """The module of the event loop the worker runs handlers on (``uvloop`` or ``asyncio``)."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
