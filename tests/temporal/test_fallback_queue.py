"""Jobs written while the Temporal fallback was in effect are run by Temporal workers.

A producer that cannot reach Temporal at start-up falls back to the PostgreSQL backend and
writes ``runner_type = 'postgres'`` rows. Where only Temporal workers run, each of them also
runs the PostgreSQL queue (``postgres_queue``, on by default; ``--no-postgres-queue`` turns it
off). Nothing here starts a PostgreSQL worker: only Temporal workers, in process (what the CLI
does: ``runner.create_worker(...)`` then ``run()``) and as the real ``jobrunner-worker`` CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.helpers import eventually, job_row
from jobrunner import (
    InvalidArgumentError,
    JobContext,
    JobHandlerRegistry,
    JobRunnerError,
    JobStatus,
    JobTimeoutError,
)
from jobrunner._config import Settings
from jobrunner._factory import JobRunnerFactory
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.temporal import TemporalWorker
from jobrunner.testing import running_worker
from temporal._support import CliWorker, free_port_address

pytestmark = pytest.mark.temporal

TESTS_DIR = Path(__file__).resolve().parent.parent
WORKER_LOGGER = "jobrunner.temporal.worker"
WAITING = (JobStatus.PENDING, JobStatus.QUEUED)


def fallback_settings(dsn: str, schema: str, task_queue: str) -> Settings:
    """A producer's settings: Temporal wanted, but nothing answers at its address."""
    return Settings.from_env(
        {
            "JOB_RUNNER_TYPE": "temporal",
            "TEMPORAL_ADDRESS": free_port_address(),
            "TEMPORAL_JOB_TASK_QUEUE": task_queue,
            "JOB_RUNNER_FALLBACK_TO_PGBOSS": "true",
            "JOBRUNNER_DATABASE_URL": dsn,
            "JOBRUNNER_SCHEMA": schema,
            "JOBRUNNER_TEMPORAL_CONNECT_TIMEOUT": "1",
            "JOBRUNNER_POOL_SIZE": "4",
        }
    )


@pytest.fixture
async def fallback_producer(
    jobrunner_dsn: str, schema: str, task_queue: str, registry: JobHandlerRegistry
) -> AsyncIterator[PostgresJobRunner]:
    """The factory's runner for a producer that found Temporal unreachable at start-up."""
    runner = await JobRunnerFactory.create(
        fallback_settings(jobrunner_dsn, schema, task_queue), registry=registry
    )
    assert isinstance(runner, PostgresJobRunner), "the fallback did not engage"
    try:
        yield runner
    finally:
        await runner.close()


async def schedule_fallback_job(
    producer: PostgresJobRunner, name: str, data: Any, *, worker_running: bool = False
) -> Any:
    handle = await producer.schedule_job(name, data)
    row = await job_row(producer, handle.job_id)
    assert row["runner_type"] == "postgres"
    if not worker_running:  # with a worker running it may be claimed (or done) already
        assert row["status"] in {s.value for s in WAITING}
    return handle


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == WORKER_LOGGER and r.levelno == logging.WARNING
    ]


async def test_temporal_worker_runs_jobs_written_during_the_fallback(
    fallback_producer: PostgresJobRunner,
    trunner: Any,
    registry: JobHandlerRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def echo(ctx: JobContext, data: dict[str, Any]) -> Any:
        return {"echo": data["value"], "attempt": ctx.attempt}

    def sync_echo(ctx: Any, data: dict[str, Any]) -> Any:
        return {"sync": data["value"], "thread": threading.current_thread().name != "MainThread"}

    registry.add("fallback-echo", echo)
    registry.add("fallback-sync", sync_echo)
    before = await schedule_fallback_job(fallback_producer, "fallback-echo", {"value": 1})

    with caplog.at_level(logging.WARNING, logger=WORKER_LOGGER):
        # What the CLI does with JOB_RUNNER_TYPE=temporal: create_worker on the Temporal runner.
        async with running_worker(trunner, grace=5.0, concurrency=4) as worker:
            assert isinstance(worker, TemporalWorker)
            assert worker.postgres_worker is not None
            # Written while the worker already runs: picked up as well.
            during = await schedule_fallback_job(
                fallback_producer, "fallback-sync", {"value": 2}, worker_running=True
            )
            via_temporal = await trunner.schedule_job("fallback-echo", {"value": 3})

            first = await fallback_producer.wait_for_job(before.job_id, timeout=60)
            second = await fallback_producer.wait_for_job(during.job_id, timeout=60)
            third = await trunner.wait_for_job(via_temporal.job_id, timeout=90)

    assert first.status is JobStatus.COMPLETED, first.error
    assert first.result == {"echo": 1, "attempt": 1}
    assert first.runner_type == "postgres"
    assert second.status is JobStatus.COMPLETED, second.error
    assert second.result == {"sync": 2, "thread": True}
    # The Temporal path still works next to it.
    assert third.status is JobStatus.COMPLETED, third.error
    assert third.runner_type == "temporal"
    assert third.result == {"echo": 3, "attempt": 1}
    for done in (first, second):
        row = await job_row(fallback_producer, done.job_id)
        assert row["attempts"] == 1
        assert row["completed_at"] is not None
        assert row["worker_id"] is None and row["lease_expires_at"] is None

    warned = messages(caplog)
    assert any("1 job(s) wait in the PostgreSQL queue" in m for m in warned), warned
    assert any("from the PostgreSQL queue" in m and "2 in total" in m for m in warned), warned


async def test_no_postgres_queue_leaves_fallback_jobs_queued(
    fallback_producer: PostgresJobRunner,
    trunner: Any,
    registry: JobHandlerRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def echo(ctx: JobContext, data: dict[str, Any]) -> Any:
        return {"echo": data["value"]}

    registry.add("fallback-echo", echo)
    waiting = await schedule_fallback_job(fallback_producer, "fallback-echo", {"value": 1})

    with caplog.at_level(logging.WARNING, logger=WORKER_LOGGER):
        async with running_worker(
            trunner, grace=5.0, concurrency=4, postgres_queue=False
        ) as worker:
            assert isinstance(worker, TemporalWorker)
            assert worker.postgres_worker is None
            # A Temporal job run end to end: the worker consumed while the row sat there.
            probe = await trunner.schedule_job("fallback-echo", {"value": 2})
            done = await trunner.wait_for_job(probe.job_id, timeout=90)
            assert done.status is JobStatus.COMPLETED, done.error

    row = await job_row(fallback_producer, waiting.job_id)
    assert row["status"] in {s.value for s in WAITING}
    assert row["attempts"] == 0
    assert row["worker_id"] is None
    assert not any("PostgreSQL queue" in m for m in messages(caplog))


def test_postgres_queue_options_are_validated() -> None:
    from jobrunner.backends.temporal import TemporalWorkerSettings

    settings = TemporalWorkerSettings.build(concurrency=3, lease_seconds=12, run_scheduler=False)
    assert settings.postgres_queue is True
    assert settings.postgres_worker_options() == {
        "concurrency": 3,
        "queues": (),
        "shutdown_grace": 30.0,
        "sync_threads": None,
        "lease_seconds": 12,
        "run_scheduler": False,
    }
    with pytest.raises(InvalidArgumentError, match="lease_seconds"):
        TemporalWorkerSettings.build(lease_seconds=-1)
    with pytest.raises(InvalidArgumentError, match="postgres_queue"):
        TemporalWorkerSettings.build(postgres_queue="no")
    with pytest.raises(InvalidArgumentError, match="unknown worker options: postgres_options"):
        TemporalWorkerSettings.build(postgres_options={})


@pytest.mark.parametrize("ending", ["raises", "returns"])
async def test_postgres_queue_ending_on_its_own_stops_the_worker_with_an_error(
    trunner: Any, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """A worker whose PostgreSQL queue is gone must not go on as if fallback jobs were run:
    the Temporal side shuts down and run() raises, so the process exits and is restarted."""
    worker = trunner.create_worker(concurrency=2, shutdown_grace=1)
    postgres = worker.postgres_worker
    assert postgres is not None
    end = asyncio.Event()

    async def run_then_end() -> None:
        postgres.started.set()
        await end.wait()
        if ending == "raises":
            raise RuntimeError("the PostgreSQL queue broke")

    monkeypatch.setattr(postgres, "run", run_then_end)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 60)
    assert not task.done()
    end.set()
    expected = RuntimeError if ending == "raises" else JobRunnerError
    with pytest.raises(expected, match="PostgreSQL queue"):
        await asyncio.wait_for(task, 60)


# -- the real CLI ------------------------------------------------------------------------------
@pytest.fixture
def spawn_cli(
    jobrunner_dsn: str, schema: str, temporal_address: str, task_queue: str, tmp_path: Path
) -> Iterator[Any]:
    env = dict(os.environ)
    env.update(
        {
            "JOB_RUNNER_TYPE": "temporal",
            "TEMPORAL_ADDRESS": temporal_address,
            "TEMPORAL_JOB_TASK_QUEUE": task_queue,
            # The worker reaches Temporal; were it to fall back itself, the test would prove
            # nothing about Temporal workers.
            "JOB_RUNNER_FALLBACK_TO_PGBOSS": "false",
            "JOBRUNNER_DATABASE_URL": jobrunner_dsn,
            "JOBRUNNER_SCHEMA": schema,
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]),
        }
    )
    made: list[CliWorker] = []

    def start(*extra: str) -> CliWorker:
        worker = CliWorker(env, tmp_path / f"worker-{len(made)}.log", *extra)
        made.append(worker)
        return worker

    yield start
    for worker in made:
        worker.close()


@pytest.fixture
async def cli_producer(
    jobrunner_dsn: str, schema: str, task_queue: str
) -> AsyncIterator[PostgresJobRunner]:
    """A fallback producer without the handlers (they live in the worker process)."""
    settings = dataclasses.replace(
        fallback_settings(jobrunner_dsn, schema, task_queue), require_registered=False
    )
    runner = await JobRunnerFactory.create(settings, registry=JobHandlerRegistry())
    assert isinstance(runner, PostgresJobRunner), "the fallback did not engage"
    try:
        yield runner
    finally:
        await runner.close()


async def wait_final(producer: Any, job_id: Any, worker: CliWorker, timeout: float = 90) -> Any:
    try:
        return await producer.wait_for_job(job_id, timeout=timeout)
    except JobTimeoutError:
        raise AssertionError(f"job not final; worker output:\n{worker.output()}") from None


async def test_cli_temporal_worker_runs_fallback_jobs(
    cli_producer: PostgresJobRunner, spawn_cli: Any
) -> None:
    handle = await schedule_fallback_job(cli_producer, "proc-echo", {"value": 7})
    worker = spawn_cli()
    info = await wait_final(cli_producer, handle.job_id, worker)
    assert info.status is JobStatus.COMPLETED, worker.output()
    assert info.result == {"echo": 7, "attempt": 1}
    assert info.runner_type == "postgres"
    assert await worker.terminate() == 0, worker.output()
    output = worker.output()
    assert "backend=temporal" in output
    assert "1 job(s) wait in the PostgreSQL queue" in output
    assert "ran 1 job(s) from the PostgreSQL queue" in output


async def test_cli_no_postgres_queue_leaves_fallback_jobs_queued(
    cli_producer: PostgresJobRunner, spawn_cli: Any, make_temporal_runner: Any
) -> None:
    waiting = await schedule_fallback_job(cli_producer, "proc-echo", {"value": 7})
    worker = spawn_cli("--no-postgres-queue")
    temporal_producer = await make_temporal_runner(require_registered=False)
    probe = await temporal_producer.schedule_job("proc-echo", {"value": 8})
    done = await wait_final(temporal_producer, probe.job_id, worker)
    assert done.status is JobStatus.COMPLETED, worker.output()
    assert await worker.terminate() == 0, worker.output()
    row = await job_row(cli_producer, waiting.job_id)
    assert row["status"] in {s.value for s in WAITING}
    assert row["attempts"] == 0
    assert "PostgreSQL queue" not in worker.output()


async def test_cli_worker_killed_mid_fallback_job_next_temporal_worker_finishes_it(
    cli_producer: PostgresJobRunner, spawn_cli: Any
) -> None:
    # The first attempt hangs (temporal/worker_app.py); a short lease so the rescue is quick.
    handle = await schedule_fallback_job(cli_producer, "proc-stuck-once", {})
    first = spawn_cli("--lease", "3")
    await eventually(
        lambda: cli_producer.get_job_status(handle.job_id),
        lambda info: info is not None and info.progress == 10,
        timeout=90,
        what="the first attempt to run",
    )
    first.proc.kill()  # SIGKILL mid-attempt: no release, no outcome, the lease just lapses
    await asyncio.to_thread(first.proc.wait, 30)
    mid = await cli_producer.get_job_status(handle.job_id)
    assert mid is not None
    assert mid.status is JobStatus.PROCESSING
    assert mid.attempts == 1

    second = spawn_cli("--lease", "3")
    info = await wait_final(cli_producer, handle.job_id, second, timeout=120)
    assert info.status is JobStatus.COMPLETED, second.output()
    assert info.result == {"finished_on_attempt": 2}
    assert info.attempts == 2
    assert info.runner_type == "postgres"
    assert await second.terminate() == 0, second.output()


async def test_the_temporal_runner_cancels_and_retries_jobs_written_during_the_fallback(
    fallback_producer: PostgresJobRunner, trunner: Any, registry: JobHandlerRegistry
) -> None:
    """Once Temporal is reachable again, a producer can still manage its fallback jobs."""

    async def echo(ctx: JobContext, data: dict[str, Any]) -> Any:
        return data

    registry.add("fallback-managed", echo)
    handle = await schedule_fallback_job(fallback_producer, "fallback-managed", {"v": 1})
    assert await trunner.cancel_job(handle.job_id, reason="no longer needed")
    row = await job_row(fallback_producer, handle.job_id)
    assert (row["status"], row["runner_type"]) == ("cancelled", "postgres")
    assert await trunner.retry_job(handle.job_id)
    row = await job_row(fallback_producer, handle.job_id)
    assert (row["status"], row["runner_type"], row["attempts"]) == ("queued", "postgres", 0)
    async with running_worker(trunner, grace=5.0, concurrency=2):
        info = await trunner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED and info.result == {"v": 1}
