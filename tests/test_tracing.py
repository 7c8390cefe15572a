"""OpenTelemetry tracing across processes (issue 16): a web process enqueues inside its own span,
a ``jobrunner-worker`` process runs the jobs, and every span (request, enqueue, attempt, steps,
the handler's own) lands in one trace. Both processes use the SDK's in-memory exporter
(tests/apps/otel_app.py); this process never configures OpenTelemetry, so other tests run with
tracing off."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobrunner import JobStatus
from jobrunner.backends.postgres import PostgresJobRunner

TESTS_DIR = Path(__file__).resolve().parent


def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBRUNNER_", "JOB_RUNNER"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


async def start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """``jobrunner worker --app apps.otel_app``, returned once it listens for jobs."""
    out = log.open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobrunner.cli",
        "-v",
        "worker",
        "--app",
        "apps.otel_app",
        "--grace",
        "5",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=out,
        stderr=asyncio.subprocess.STDOUT,
    )
    out.close()
    for _ in range(600):
        text = await asyncio.to_thread(log.read_text, errors="replace")
        if "starting" in text and "worker" in text:
            return proc
        if proc.returncode is not None:
            raise AssertionError(f"worker exited:\n{text}")
        await asyncio.sleep(0.1)  # a log line in another process: nothing to await
    raise AssertionError(f"worker did not start:\n{text}")


async def stop(proc: asyncio.subprocess.Process, log: Path) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 60)
    except TimeoutError:
        proc.kill()
        raise AssertionError(await asyncio.to_thread(log.read_text, errors="replace")) from None


async def enqueue_and_wait(env: dict[str, str], *names: str) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "apps.otel_enqueue",
        *names,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode(errors="replace")
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, [s["name"] for s in spans])
    return found[0]


def check_one_trace(
    spans: list[dict[str, Any]], jobs: list[dict[str, Any]], runner_type: str
) -> None:
    """The trace of the web request holds every span of every process, correctly nested."""
    request = one(spans, "POST /checkout")
    trace_id = request["trace_id"]
    assert request["service"] == "web" and request["parent_id"] is None
    assert {s["trace_id"] for s in spans} == {trace_id}

    by_id = {s["span_id"]: s for s in spans}
    invoice, sync_job, broken = jobs
    for job, name in ((invoice, "otel-invoice"), (sync_job, "otel-sync"), (broken, "otel-broken")):
        enqueue = one(spans, f"jobrunner.enqueue {name}")
        run = one(spans, f"jobrunner.run {name}")
        assert enqueue["parent_id"] == request["span_id"] and enqueue["kind"] == "PRODUCER"
        assert enqueue["service"] == "web"
        assert enqueue["attributes"]["messaging.system"] == "jobrunner"
        assert enqueue["attributes"]["messaging.destination.name"] == "default"
        assert enqueue["attributes"]["jobrunner.job_id"] == job["job_id"]
        # The attempt continues the enqueuer's trace in the worker process.
        assert run["parent_id"] == enqueue["span_id"] and run["kind"] == "CONSUMER"
        assert run["service"] == "worker" and run["pid"] != enqueue["pid"]
        attrs = run["attributes"]
        assert attrs["jobrunner.job_id"] == job["job_id"]
        assert attrs["messaging.message.id"] == job["job_id"]
        assert attrs["jobrunner.attempt"] == 1
        assert attrs["jobrunner.tenant"] == "00000000-0000-0000-0000-000000000000"
        assert attrs["jobrunner.runner_type"] == runner_type
        assert attrs["messaging.operation.type"] == "process"
        # Never job data: the payload {"number": 7} appears in no attribute.
        for span in (enqueue, run):
            assert "number" not in json.dumps(span["attributes"])

    run = one(spans, "jobrunner.run otel-invoice")
    render, send = one(spans, "jobrunner.step render"), one(spans, "jobrunner.step send")
    assert render["parent_id"] == send["parent_id"] == run["span_id"]
    assert one(spans, "smtp")["parent_id"] == send["span_id"]
    assert run["status"] == "UNSET" and run["attributes"]["jobrunner.outcome"] == "completed"

    # A plain def handler: its thread sees the attempt's span, its step nests below it.
    compute = one(spans, "jobrunner.step compute")
    assert compute["parent_id"] == one(spans, "jobrunner.run otel-sync")["span_id"]
    assert one(spans, "inner")["parent_id"] == compute["span_id"]

    failed = one(spans, "jobrunner.run otel-broken")
    assert failed["status"] == "ERROR"
    assert failed["attributes"]["jobrunner.outcome"] == "failed"
    (event,) = failed["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "card declined"
    assert "card declined" in event["attributes"]["exception.stacktrace"]
    assert by_id[failed["parent_id"]]["name"] == "jobrunner.enqueue otel-broken"


async def test_one_trace_from_the_enqueuing_process_to_the_worker_process(
    runner: PostgresJobRunner, jobrunner_dsn: str, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    common = {
        "JOBRUNNER_DATABASE_URL": jobrunner_dsn,
        "JOBRUNNER_SCHEMA": runner.schema,
        "OTEL_SPANS_FILE": str(spans_file),
    }
    log = tmp_path / "worker.log"
    worker = await start_worker(process_env(OTEL_SERVICE="worker", **common), log)
    try:
        jobs = await enqueue_and_wait(
            process_env(OTEL_SERVICE="web", **common), "otel-invoice", "otel-sync", "otel-broken"
        )
    finally:
        await stop(worker, log)
    assert [sorted(j) for j in jobs] == [["job_id", "result"]] * 2 + [["error", "job_id"]]
    assert jobs[0]["result"]["invoice"] == 7 and jobs[1]["result"] == "ok"
    assert jobs[2]["error"] == "JobFailedError"
    check_one_trace(read_spans(spans_file), jobs, "postgres")
    # The stored trace context is the enqueue span's (W3C traceparent), kept with the job.
    info = await runner.get_job_status(jobs[0]["job_id"])
    assert info is not None and info.status is JobStatus.COMPLETED
    stored = info.metadata["jobrunner.trace_context"]["traceparent"]
    enqueue = one(read_spans(spans_file), "jobrunner.enqueue otel-invoice")
    assert stored.startswith(f"00-{enqueue['trace_id']}-{enqueue['span_id']}-")


async def test_tracing_off_stores_nothing_with_the_job(runner: PostgresJobRunner) -> None:
    """This process has no TracerProvider: metadata stays exactly as given."""
    runner.registry.add("plain", lambda ctx, data: None)
    handle = await runner.schedule_job("plain", {}, metadata={"order": 5})
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.metadata == {"order": 5}


LATE_PROVIDER_SCRIPT = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from jobrunner import JobHandlerRegistry
from jobrunner.testing import InMemoryJobRunner, adrain

TRACE_ID, SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7
seen = {}


async def main():
    registry = JobHandlerRegistry()
    runner = InMemoryJobRunner(registry=registry)

    async def parent(ctx, data):
        seen["parent"] = trace.get_current_span().get_span_context().trace_id
        await runner.schedule_job("child", {})

    async def child(ctx, data):
        seen["child"] = trace.get_current_span().get_span_context().trace_id

    async def traced(ctx, data):
        async with ctx.step("render"):
            pass

    registry.add("parent", parent)
    registry.add("child", child)
    registry.add("traced", traced)

    # No TracerProvider yet: a remote context current at the enqueue still travels with the
    # job and its attempt carries it on to the job it enqueues (as the API's no-op tracer does).
    remote = SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(remote)):
        await runner.schedule_job("parent", {})
    await adrain(runner, timeout=30)

    # A TracerProvider configured after jobrunner reported its first attempts: spans from now on.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    await runner.schedule_job("traced", {})
    await adrain(runner, timeout=30)
    spans = [
        {
            "name": s.name,
            "trace_id": s.context.trace_id,
            "span_id": s.context.span_id,
            "parent": s.parent.span_id if s.parent else None,
        }
        for s in exporter.get_finished_spans()
    ]
    await runner.close()
    print(json.dumps({"seen": seen, "trace_id": TRACE_ID, "spans": spans}))


asyncio.run(main())
"""


def test_context_travels_untraced_and_spans_start_with_a_late_provider() -> None:
    """In one process without OpenTelemetry configured (the in-memory runner): a stored trace
    context still reaches the jobs an attempt enqueues; once the application configures a
    TracerProvider, the next attempt has its span and its step's child span."""
    proc = subprocess.run(
        [sys.executable, "-c", LATE_PROVIDER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=process_env(),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["seen"] == {"parent": out["trace_id"], "child": out["trace_id"]}
    spans = {s["name"]: s for s in out["spans"]}
    assert sorted(spans) == [
        "jobrunner.enqueue traced",
        "jobrunner.run traced",
        "jobrunner.step render",
    ]
    enqueue, run, step = (spans[n] for n in sorted(spans))
    assert run["trace_id"] == enqueue["trace_id"] == step["trace_id"]
    assert run["parent"] == enqueue["span_id"] and step["parent"] == run["span_id"]
