"""One benchmark worker process: a PostgresWorker with a no-op handler that records its start.

Protocol with bench/run.py (one JSON object per line):

    child  -> {"event": "ready", "pid": ...}        runner started, pool open
    parent -> "go"                                   start consuming
    child  -> {"event": "started", "t": mono}        just before the worker starts claiming
    child  -> {"event": "committed", "n": k, "t": mono}   after every committed outcome flush
    parent -> "exit"                                 stop gracefully
    child  -> {"event": "result", ...}               handler calls, samples, peak RSS

Times are ``time.monotonic()`` (CLOCK_MONOTONIC is system-wide on Linux, so the parent can
compare them with its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

from jobrunner import JobHandlerRegistry
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._worker import PostgresWorker

JOB_NAME = "bench.noop"


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CountingWorker(PostgresWorker):
    """Reports every committed outcome flush on stdout (the drain's end is the last one)."""

    committed = 0
    #: Seconds each job waited in this worker between its claim and its start (the prefetch).
    held_waits: list[float] = []

    def _start_job(self, job: Any, claimed_at: float) -> None:
        self.held_waits.append(time.monotonic() - claimed_at)
        super()._start_job(job, claimed_at)

    async def _write_outcomes(self, batch: Any) -> None:
        await super()._write_outcomes(batch)
        self.committed += len(batch)
        emit(
            "committed",
            n=len(batch),
            total=self.committed,
            t=time.monotonic(),
            cpu=time.process_time(),
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", default="jobrunner")
    parser.add_argument("--mode", choices=["drain", "latency", "scheduled"], default="drain")
    parser.add_argument("--settings", default="{}", help="WorkerSettings options as JSON")
    args = parser.parse_args()
    options: dict[str, Any] = json.loads(args.settings)
    pool_size = int(options.pop("pool_size", 4))

    samples: list[float] = []
    registry = JobHandlerRegistry()
    mode = args.mode

    async def noop(ctx: Any, data: dict[str, Any]) -> None:
        # Record the start: monotonic for the drain, lag vs the enqueue call or the due time.
        if mode == "drain":
            samples.append(time.monotonic())
        elif mode == "latency":
            samples.append(time.monotonic() - data["t"])
        else:
            samples.append(time.time() - data["due"])

    registry.add(JOB_NAME, noop)
    runner = PostgresJobRunner(
        args.dsn, schema=args.schema, registry=registry, auto_migrate=False, pool_size=pool_size
    )
    await runner.start()
    worker = CountingWorker(runner, _settings(options))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit("ready", pid=_pid())
    await _expect(reader, "go")
    emit("started", t=time.monotonic(), cpu=time.process_time())
    task = asyncio.create_task(worker.run())
    await _expect(reader, "exit")
    await worker.stop(grace=10)
    await task
    await runner.close()
    emit(
        "result",
        calls=len(samples),
        samples=samples if mode != "drain" else [],
        first_start=min(samples) if samples and mode == "drain" else None,
        committed=worker.committed,
        claimed=worker.claimed_total,
        peak_rss_mb=peak_rss_mb(),
        held_wait_ms=_quantiles(worker.held_waits),
        cpu_s=sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
    )


def _quantiles(waits: list[float]) -> dict[str, float]:
    """p50 / p99 / max of ``waits`` in milliseconds (empty: zeros)."""
    if not waits:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(waits)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5) * 1e3, "p99": pick(0.99) * 1e3, "max": ordered[-1] * 1e3}


def _settings(options: dict[str, Any]) -> Any:
    from jobrunner.backends.postgres._worker import WorkerSettings

    return WorkerSettings.build(**options)


def _pid() -> int:
    import os

    return os.getpid()


async def _expect(reader: asyncio.StreamReader, word: str) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise SystemExit(f"parent went away while waiting for {word!r}")
        if line.decode().strip() == word:
            return


def enable_observability(mode: str) -> None:
    """``JOBRUNNER_BENCH_OTEL``: the worker runs with OpenTelemetry on, as a production service
    would (the SDK with a batching span processor and a metric reader; the spans are dropped by
    the exporter, the cost of making them is what is measured). ``1``: every attempt traced,
    and metrics; ``sampled``: root traces sampled at 10 % (parent-based), and metrics;
    ``metrics``: metrics only."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if mode in ("1", "sampled"):
        sampler = ParentBased(TraceIdRatioBased(0.1)) if mode == "sampled" else ALWAYS_ON
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


if __name__ == "__main__":
    if os.environ.get("JOBRUNNER_BENCH_OTEL"):
        enable_observability(os.environ["JOBRUNNER_BENCH_OTEL"])
    # The event loop jobrunner-worker picks (--loop auto: uvloop when installed);
    # JOBRUNNER_BENCH_LOOP=asyncio measures asyncio's.
    from jobrunner.cli._worker import loop_factory

    factory = loop_factory(os.environ.get("JOBRUNNER_BENCH_LOOP", "auto"), "postgres")
    with asyncio.Runner(loop_factory=factory) as bench_loop:
        bench_loop.run(main())
