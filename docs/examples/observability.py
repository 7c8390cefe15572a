"""Tracing, metrics and results, runnable:

    pip install '.[otel,prometheus]' opentelemetry-sdk    # from a checkout of jobrunner
    JOBRUNNER_DATABASE_URL=postgresql://... python docs/examples/observability.py

Prints the spans of one request that enqueues a job (the request, the enqueue, the attempt and
its step, all in one trace) to the console, the job's result, and the Prometheus metrics.
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from jobrunner import JobContext, JobRunnerFactory, job
from jobrunner.observability import prometheus_text
from jobrunner.testing import running_worker

# 1. The application configures OpenTelemetry; jobrunner needs no call of its own.
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
trace.set_tracer_provider(provider)


@job("render-invoice")
async def render_invoice(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    async with ctx.step("render-pdf"):  # a child span of the attempt's span
        pdf = f"invoice-{data['number']}.pdf"
    return {"pdf": pdf}


async def main() -> None:
    runner = await JobRunnerFactory.get_instance()
    async with running_worker(runner, concurrency=2):
        # 2. A request of the application: the enqueue span is its child, and the attempt's
        #    span (in whichever worker process runs it) continues the same trace.
        with trace.get_tracer("shop").start_as_current_span("POST /invoices"):
            handle = await runner.schedule_job("render-invoice", {"number": 42})
        # 3. Await the result: woken by the database's notification, not by polling.
        print("result:", await handle.result(timeout=30))
    # 4. The Prometheus metrics the dashboard serves at GET /metrics.
    print(await prometheus_text(runner))
    await JobRunnerFactory.reset()


if __name__ == "__main__":
    asyncio.run(main())
