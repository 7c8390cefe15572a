"""Run a worker for the duration of a block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from jobrunner._runner import JobRunner, JobWorker


@contextlib.asynccontextmanager
async def running_worker(
    runner: JobRunner, *, grace: float = 5.0, **options: Any
) -> AsyncIterator[JobWorker]:
    """Start ``runner.create_worker(**options)``, wait until it consumes, stop it on exit."""
    worker = runner.create_worker(**options)
    task = asyncio.create_task(worker.run())
    started = asyncio.create_task(worker.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # re-raise why the worker could not start
    try:
        yield worker
    finally:
        await worker.stop(grace=grace)
        await task
