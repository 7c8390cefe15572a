"""Enqueue jobs inside a span of this process and wait for their results (another process runs
them): ``python -m apps.otel_enqueue NAME [NAME ...]`` with the runner from the environment.

Prints one JSON line per job: its id, its result or its error.
"""

from __future__ import annotations

import asyncio
import json
import sys

from opentelemetry import trace

import apps.otel_app  # noqa: F401 - configures the SDK (spans to $OTEL_SPANS_FILE)
from jobrunner import JobRunnerError, JobRunnerFactory


async def main(names: list[str]) -> None:
    runner = await JobRunnerFactory.create()
    try:
        tracer = trace.get_tracer("checkout")
        with tracer.start_as_current_span("POST /checkout"):
            handles = [await runner.schedule_job(name, {"number": 7}) for name in names]
        for handle in handles:
            try:
                outcome = {"result": await handle.result(timeout=120)}
            except JobRunnerError as exc:
                outcome = {"error": type(exc).__name__}
            print(json.dumps({"job_id": str(handle.job_id), **outcome}), flush=True)
    finally:
        await runner.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
