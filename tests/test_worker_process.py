"""Worker processes (``jobrunner-worker`` / ``python -m jobrunner.cli worker``): kill -9 mid-job,
graceful shutdown on SIGTERM, re-queue after a short grace, and a second signal forcing exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from apps.helpers import details, eventually, fetch, job_row
from jobrunner import JobContext, JobHandlerRegistry, JobStatus
from jobrunner._queue._store import AttemptRef, CompletedAttempt
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._store import completed_params
from jobrunner.cli._worker import loop_factory
from jobrunner.testing import running_worker

TESTS_DIR = Path(__file__).resolve().parent


class WorkerProcess:
    """A worker subprocess whose stderr is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_line(self, pattern: str, timeout: float = 60) -> str:
        regex = re.compile(pattern)

        async def find() -> str:
            async with self._changed:
                while True:
                    for line in self.lines:
                        if regex.search(line):
                            return line
                    if self._reader.done():
                        raise AssertionError(
                            f"worker exited before logging {pattern!r}:\n" + "\n".join(self.lines)
                        )
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait(self, timeout: float = 60) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, timeout)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def worker_process(
    dsn: str, schema: str, *args: str, module_form: bool = False, app: str = "apps.worker_app"
) -> AsyncIterator[WorkerProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBRUNNER_", "JOB_RUNNER"))}
    env.update(
        JOBRUNNER_DATABASE_URL=dsn,
        JOBRUNNER_SCHEMA=schema,
        PYTHONPATH=os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
    )
    script = Path(sys.executable).with_name("jobrunner-worker")
    if module_form or not script.exists():
        cmd = [sys.executable, "-m", "jobrunner.cli", "worker"]
    else:
        cmd = [str(script)]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "--app",
        app,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = WorkerProcess(proc)
    try:
        yield worker
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker._reader, 10)


async def local_block(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """This process's version of ``proc-block``: finishes at once."""
    return {"attempt": ctx.attempt, "pid": os.getpid()}


async def held_by_subprocess(
    runner: PostgresJobRunner, job_id: uuid.UUID, wp: WorkerProcess
) -> dict[str, Any]:
    """Wait until the subprocess worker runs the handler (it reports progress 10)."""

    async def probe() -> dict[str, Any]:
        if wp.proc.returncode is not None:
            raise AssertionError(f"worker exited with {wp.proc.returncode}:\n{wp.output}")
        return await job_row(runner, job_id)

    return await eventually(
        probe,
        lambda r: r["status"] == "processing" and r["progress"] == 10,
        timeout=60,
        what="subprocess running the job",
    )


async def test_kill_9_mid_job_is_rerun_elsewhere(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    registry.add("proc-block", local_block)
    handle = await runner.schedule_job("proc-block", {"release_file": None})
    async with worker_process(jobrunner_dsn, schema, "--lease", "2") as wp:
        row = await held_by_subprocess(runner, handle.job_id, wp)
        assert row["attempts"] == 1 and row["worker_id"] is not None
        dead_token = row["lease_token"]
        wp.proc.send_signal(signal.SIGKILL)
        assert await wp.wait() == -signal.SIGKILL
    # The dead worker's lease (2 s) expires; another worker rescues and re-runs the job.
    async with running_worker(runner, lease_seconds=2):
        info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 2  # the killed attempt counts
    assert info.result == {"attempt": 2, "pid": os.getpid()}
    attempts = await details(runner, handle.job_id, "attempt")
    assert [(r["status"], r["retry_count"]) for r in attempts] == [("failed", 1), ("completed", 2)]
    assert attempts[0]["metadata"].get("lease_expired") is True
    assert attempts[0]["result"]["type"] == "jobrunner.LeaseExpired"
    # A late completion from the dead attempt is impossible: its token is fenced out.
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.complete_jobs,
            completed_params(
                [
                    CompletedAttempt(
                        AttemptRef(row["tenant"], handle.job_id, dead_token),
                        '{"zombie": true}',
                        datetime.now(UTC).timestamp(),
                        1.0,
                    )
                ],
                str(row["worker_id"]),
            ),
        )
        assert await cur.fetchall() == []
    final = await runner.get_job_status(handle.job_id)
    assert final is not None and final.result == {"attempt": 2, "pid": os.getpid()}


async def test_sigterm_lets_running_job_finish_and_exits_0(
    runner: PostgresJobRunner,
    registry: JobHandlerRegistry,
    jobrunner_dsn: str,
    schema: str,
    tmp_path: Path,
) -> None:
    registry.add("proc-block", local_block)
    registry.add("proc-echo", local_block)
    release = tmp_path / "release"
    handle = await runner.schedule_job("proc-block", {"release_file": str(release)})
    async with worker_process(
        jobrunner_dsn, schema, "--concurrency", "3", "--queues", "default,other"
    ) as wp:
        banner = await wp.wait_for_line(r"jobrunner worker .* starting")
        assert "backend=postgres" in banner and "queues=default,other" in banner
        assert "concurrency=3" in banner and "proc-block" in banner and "proc-echo" in banner
        await held_by_subprocess(runner, handle.job_id, wp)
        wp.proc.send_signal(signal.SIGTERM)
        await wp.wait_for_line(r"received SIGTERM")
        # stopped claiming: a job scheduled now stays queued
        late = await runner.schedule_job("proc-echo", {"n": 1})
        row = await job_row(runner, handle.job_id)
        assert row["status"] == "processing"  # still running, within its grace period
        release.touch()
        assert await wp.wait() == 0, wp.output
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.COMPLETED
    assert info.attempts == 1 and info.result == {"attempt": 1, "pid": wp.proc.pid}
    late_info = await runner.get_job_status(late.job_id)
    assert late_info is not None and late_info.status is JobStatus.QUEUED
    assert late_info.attempts == 0


@pytest.mark.parametrize(
    ("flags", "expected"), [((), "uvloop"), (("--loop", "asyncio"), "asyncio")]
)
async def test_the_worker_runs_the_postgres_queue_on_uvloop_unless_told_otherwise(
    runner: PostgresJobRunner,
    registry: JobHandlerRegistry,
    jobrunner_dsn: str,
    schema: str,
    flags: tuple[str, ...],
    expected: str,
) -> None:
    async def local_loop(ctx: JobContext, data: dict[str, Any]) -> str:
        raise AssertionError("runs in the worker process only")

    registry.add("proc-loop", local_loop)
    handle = await runner.schedule_job("proc-loop", {})
    async with worker_process(jobrunner_dsn, schema, *flags) as wp:
        info = await runner.wait_for_job(handle.job_id, timeout=60)
        wp.proc.send_signal(signal.SIGTERM)
        assert await wp.wait() == 0, wp.output
    assert info.status is JobStatus.COMPLETED, info.error
    assert info.result == expected


def test_loop_choice() -> None:
    import uvloop

    assert loop_factory("auto", "postgres") is uvloop.new_event_loop
    assert loop_factory("uvloop", "temporal") is uvloop.new_event_loop
    assert loop_factory("auto", "temporal") is None
    assert loop_factory("asyncio", "postgres") is None


async def test_short_grace_requeues_unfinished_job(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    registry.add("proc-block", local_block)
    handle = await runner.schedule_job("proc-block", {"release_file": None})
    async with worker_process(jobrunner_dsn, schema, "--grace", "0.5", module_form=True) as wp:
        await held_by_subprocess(runner, handle.job_id, wp)
        wp.proc.send_signal(signal.SIGTERM)
        assert await wp.wait() == 0, wp.output
    assert "re-queued 1 unfinished jobs" in wp.output
    row = await job_row(runner, handle.job_id)
    assert row["status"] == "queued"
    assert row["attempts"] == 0  # the interrupted attempt is not held against the job
    assert row["worker_id"] is None and row["lease_expires_at"] is None
    async with running_worker(runner):
        info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 1 and info.result == {"attempt": 1, "pid": os.getpid()}


async def test_second_signal_forces_exit(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    registry.add("proc-block", local_block)
    handle = await runner.schedule_job("proc-block", {"release_file": None})
    async with worker_process(jobrunner_dsn, schema, "--grace", "600") as wp:
        await held_by_subprocess(runner, handle.job_id, wp)
        wp.proc.send_signal(signal.SIGTERM)
        await wp.wait_for_line(r"received SIGTERM: finishing running jobs")
        wp.proc.send_signal(signal.SIGINT)
        await wp.wait_for_line(r"received SIGINT again")
        # far sooner than the 600 s grace
        assert await wp.wait(timeout=60) == 0, wp.output
    row = await job_row(runner, handle.job_id)
    assert row["status"] == "queued" and row["attempts"] == 0


@pytest.mark.parametrize(
    "flag",
    [
        "--concurrency=0",
        "--lease=-1",
        "--app=apps.no_such_module",
        "--database-url=postgresql://postgres@127.0.0.1:1/none",
    ],
)
async def test_bad_worker_flags_fail_cleanly(jobrunner_dsn: str, schema: str, flag: str) -> None:
    async with worker_process(jobrunner_dsn, schema, flag) as wp:
        code = await wp.wait()
    assert code == 2, wp.output
    assert "error:" in wp.output and "Traceback" not in wp.output


async def test_two_worker_processes_never_share_an_attempt(
    runner: PostgresJobRunner,
    registry: JobHandlerRegistry,
    jobrunner_dsn: str,
    schema: str,
    tmp_path: Path,
) -> None:
    registry.add("proc-block", local_block)
    registry.add("proc-echo", local_block)
    release = tmp_path / "go"
    barriers = [
        await runner.schedule_job("proc-block", {"release_file": str(release)}) for _ in range(2)
    ]
    async with (
        worker_process(jobrunner_dsn, schema, "--concurrency", "1") as one,
        worker_process(jobrunner_dsn, schema, "--concurrency", "1") as two,
    ):
        # each process (concurrency 1) holds one barrier job: both are up and claiming
        for handle, wp in zip(barriers, (one, two), strict=True):
            await eventually(
                lambda h=handle: job_row(runner, h.job_id),  # type: ignore[misc]
                lambda r: r["status"] == "processing" and r["progress"] == 10,
                timeout=60,
                what=f"barrier held ({wp.proc.pid})",
            )
        handles = await runner.schedule_jobs("proc-echo", [{"i": i} for i in range(300)])
        release.touch()
        infos = [await runner.wait_for_job(h.job_id, timeout=120) for h in handles]
        one.proc.send_signal(signal.SIGTERM)
        two.proc.send_signal(signal.SIGTERM)
        assert await one.wait() == 0 and await two.wait() == 0
    assert all(i.status is JobStatus.COMPLETED and i.attempts == 1 for i in infos)
    assert [i.result["echo"] for i in infos] == [{"i": i} for i in range(300)]
    pids = {i.result["pid"] for i in infos}
    assert pids == {one.proc.pid, two.proc.pid}
    rows = await fetch(
        runner,
        "SELECT job_id, count(*) AS n FROM {schema}.job_details "
        "WHERE step_name = 'attempt' GROUP BY job_id",
    )
    assert len(rows) == 302 and {r["n"] for r in rows} == {1}


async def test_stuck_sync_handler_does_not_keep_the_process_alive(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    """A plain ``def`` handler blocked in work that ignores ``ctx.is_cancelled()`` cannot be
    interrupted; after the grace period its job is re-queued and the process still exits."""
    registry.add("proc-sync-stuck", local_block)
    handle = await runner.schedule_job("proc-sync-stuck", {"release_file": None})
    async with worker_process(jobrunner_dsn, schema, "--grace", "0.5") as wp:
        await held_by_subprocess(runner, handle.job_id, wp)
        wp.proc.send_signal(signal.SIGTERM)
        assert await wp.wait(timeout=60) == 0, wp.output
    row = await job_row(runner, handle.job_id)
    assert row["status"] == "queued" and row["attempts"] == 0
