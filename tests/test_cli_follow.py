"""``jobrunner jobs enqueue`` and ``jobrunner jobs watch``, and the worker's JSON logs
(issue 16), as real processes against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from apps.helpers import count_jobs, job_row
from jobrunner import JobContext, JobHandlerRegistry, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

TESTS_DIR = Path(__file__).resolve().parent
TENANT = "44444444-4444-4444-4444-444444444444"


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBRUNNER_", "JOB_RUNNER"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def cli(runner: PostgresJobRunner, dsn: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobrunner.cli",
        *args,
        "--database-url",
        dsn,
        "--schema",
        runner.schema,
        env=cli_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_enqueue_prints_the_id_of_the_job_it_wrote(
    runner: PostgresJobRunner, jobrunner_dsn: str
) -> None:
    code, out, err = await cli(
        runner,
        jobrunner_dsn,
        "jobs",
        "enqueue",
        "send_invoice",
        "--data",
        '{"invoice": 42, "to": "ana@example.com"}',
        "--tenant",
        TENANT,
        "--queue",
        "billing",
        "--at",
        "2031-05-06T07:08:09",
    )
    assert code == 0, err
    job_id = uuid.UUID(out.strip())
    row = await job_row(runner, job_id)
    assert row["type"] == "send_invoice" and str(row["tenant"]) == TENANT
    assert row["data"] == {"invoice": 42, "to": "ana@example.com"}
    assert row["queue"] == "billing" and row["status"] == "pending"
    assert row["run_at"] == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)

    code, out, err = await cli(runner, jobrunner_dsn, "jobs", "enqueue", "ping", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["created"] is True and answer["tenant"] == "00000000-0000-0000-0000-000000000000"
    assert (await job_row(runner, uuid.UUID(answer["job_id"])))["status"] == "queued"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "[1, 2]"], "must be a JSON object"),
        (["--data", "{not json"], "not valid JSON"),
        (["--data", '{"text": "\\u0000"}'], "NUL"),
        (["--tenant", "not-a-uuid"], "--tenant"),
        (["--at", "tomorrow"], "ISO 8601"),
        (["--at", "2031-05-06T07:08:09+25:00"], "--at"),
        (["--queue", ""], "--queue"),
    ],
)
async def test_enqueue_refuses_bad_input_and_writes_nothing(
    runner: PostgresJobRunner, jobrunner_dsn: str, args: list[str], message: str
) -> None:
    code, out, err = await cli(runner, jobrunner_dsn, "jobs", "enqueue", "ping", *args)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err
    assert await count_jobs(runner) == 0


async def test_enqueue_refuses_an_empty_name(runner: PostgresJobRunner, jobrunner_dsn: str) -> None:
    code, _, err = await cli(runner, jobrunner_dsn, "jobs", "enqueue", "")
    assert code == 2 and "job name" in err
    assert await count_jobs(runner) == 0


class Watch:
    """``jobrunner jobs watch`` in a subprocess, its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def expect(self, text: str, timeout: float = 30) -> None:
        async def read() -> None:
            assert self.proc.stdout is not None
            while not any(text in line for line in self.lines):
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"watch ended before {text!r}:\n" + "\n".join(self.lines))
                self.lines.append(raw.decode().rstrip())

        await asyncio.wait_for(read(), timeout)


async def start_watch(runner: PostgresJobRunner, dsn: str, job_id: uuid.UUID) -> Watch:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobrunner.cli",
        "jobs",
        "watch",
        str(job_id),
        "--database-url",
        dsn,
        "--schema",
        runner.schema,
        env=cli_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Watch(proc)


async def test_watch_follows_progress_and_steps_then_exits_0(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    seen_progress, seen_step = asyncio.Event(), asyncio.Event()

    async def render(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        await ctx.set_progress(40, "rendering page 4 of 10")
        await seen_progress.wait()
        async with ctx.step("render"):
            await seen_step.wait()
        await ctx.set_progress(100, "done")
        return {"pages": 10}

    registry.add("render", render)
    handle = await runner.schedule_job("render", {})
    watch = await start_watch(runner, jobrunner_dsn, handle.job_id)
    await watch.expect("status queued, attempt 0 of 3")
    async with running_worker(runner):
        await watch.expect("status running, attempt 1 of 3")
        await watch.expect("progress 40% rendering page 4 of 10")
        seen_progress.set()
        await watch.expect("step render running (attempt 1)")
        seen_step.set()
        await watch.expect("step render completed (attempt 1)")
        await watch.expect("status completed, attempt 1 of 3")
        await watch.expect('result: {"pages": 10}')
        assert await asyncio.wait_for(watch.proc.wait(), 30) == 0


async def test_watch_exits_1_for_a_failed_job_and_an_unknown_one(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    async def broken(ctx: JobContext, data: dict[str, Any]) -> None:
        raise ValueError("the printer is on fire")

    registry.add("broken", broken, retry=RetryPolicy(max_attempts=1))
    handle = await runner.schedule_job("broken", {})
    watch = await start_watch(runner, jobrunner_dsn, handle.job_id)
    await watch.expect("status queued")
    async with running_worker(runner):
        await watch.expect("error: ValueError: the printer is on fire")
        assert await asyncio.wait_for(watch.proc.wait(), 30) == 1
    code, _, err = await cli(runner, jobrunner_dsn, "jobs", "watch", str(uuid.uuid4()))
    assert code == 1 and "no job" in err


@pytest.fixture
async def json_worker(runner: PostgresJobRunner, jobrunner_dsn: str) -> AsyncIterator[Any]:
    env = cli_env()
    env.update(JOBRUNNER_DATABASE_URL=jobrunner_dsn, JOBRUNNER_SCHEMA=runner.schema)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobrunner.cli",
        "worker",
        "--app",
        "apps.otel_app",
        "--log-format",
        "json",
        env={**env, "OTEL_SPANS_FILE": os.devnull},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    yield proc
    if proc.returncode is None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def test_worker_logs_json_lines_with_the_jobs_identity(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, json_worker: Any
) -> None:
    # The worker process has the real handler; this one only gives the job its policy.
    registry.add("otel-broken", lambda ctx, data: None, retry=RetryPolicy(max_attempts=1))
    handle = await runner.schedule_job("otel-broken", {}, tenant=TENANT)
    records = []

    async def until_failure_logged() -> dict[str, Any]:
        assert json_worker.stderr is not None
        while True:
            raw = await json_worker.stderr.readline()
            assert raw, "worker exited"
            record = json.loads(raw)  # every line is one JSON object
            records.append(record)
            if record.get("job_id") == str(handle.job_id) and record.get("outcome") == "failed":
                return record

    record = await asyncio.wait_for(until_failure_logged(), 60)
    assert record["level"] == "ERROR" and record["logger"] == "jobrunner.execution"
    assert record["job_name"] == "otel-broken" and record["tenant"] == TENANT
    assert record["attempt"] == 1 and record["error_type"] == "ValueError"
    assert "card declined" in record["message"] and "card declined" in record["exception"]
    assert datetime.fromisoformat(record["time"]).tzinfo is not None
    assert any("starting" in r["message"] for r in records)
