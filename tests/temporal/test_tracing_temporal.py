"""Tracing on the Temporal backend (issue 16): a web process enqueues through Temporal inside
its own span, a ``jobrunner-worker`` process runs the workflow's activity, and the attempt's
span continues the enqueuer's trace (the context travels in the job's row and workflow input),
exactly as on PostgreSQL (tests/test_tracing.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from test_tracing import (
    check_one_trace,
    enqueue_and_wait,
    process_env,
    read_spans,
    start_worker,
    stop,
)

pytestmark = pytest.mark.temporal


async def test_one_trace_through_temporal(
    trunner: Any, jobrunner_dsn: str, temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    common = {
        "JOB_RUNNER_TYPE": "temporal",
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_JOB_TASK_QUEUE": task_queue,
        "JOB_RUNNER_FALLBACK_TO_PGBOSS": "false",
        "JOBRUNNER_DATABASE_URL": jobrunner_dsn,
        "JOBRUNNER_SCHEMA": trunner.schema,
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
    assert jobs[0]["result"]["invoice"] == 7 and jobs[1]["result"] == "ok"
    assert jobs[2]["error"] == "JobFailedError"
    check_one_trace(read_spans(spans_file), jobs, "temporal")
