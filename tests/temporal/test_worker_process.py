"""The ``jobrunner-worker`` CLI with ``JOB_RUNNER_TYPE=temporal`` in a real subprocess: clean
exit on SIGTERM, and a worker killed mid-activity whose job finishes on a new worker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner import JobStatus
from temporal._support import CliWorker

pytestmark = pytest.mark.temporal

TESTS_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker_env(
    jobrunner_dsn: str, schema: str, temporal_address: str, task_queue: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "JOB_RUNNER_TYPE": "temporal",
            "TEMPORAL_ADDRESS": temporal_address,
            "TEMPORAL_JOB_TASK_QUEUE": task_queue,
            "JOB_RUNNER_FALLBACK_TO_PGBOSS": "false",
            "JOBRUNNER_DATABASE_URL": jobrunner_dsn,
            "JOBRUNNER_SCHEMA": schema,
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]),
        }
    )
    return env


@pytest.fixture
def spawn(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    made: list[CliWorker] = []

    def start(name: str = "worker") -> CliWorker:
        # The PostgreSQL-only flag is accepted on Temporal (Schedules fire on the server).
        proc = CliWorker(worker_env, tmp_path / f"{name}-{len(made)}.log", "--no-scheduler")
        made.append(proc)
        return proc

    yield start
    for proc in made:
        proc.close()


@pytest.fixture
async def producer(make_temporal_runner: Any) -> Any:
    """A producer without the handlers: the workers' registry supplies the policy."""
    return await make_temporal_runner(require_registered=False)


async def test_sigterm_exits_cleanly(spawn: Any, producer: Any) -> None:
    # Several runs: the temporalio exit crash (sdk-python #300) was intermittent.
    for run in range(3):
        worker = spawn(f"sigterm{run}")
        handle = await producer.schedule_job("proc-echo", {"value": run})
        info = await producer.wait_for_job(handle.job_id, timeout=90)
        assert info.status is JobStatus.COMPLETED, worker.output()
        assert info.result == {"echo": run, "attempt": 1}
        worker.proc.send_signal(signal.SIGTERM)
        code = await worker.wait()
        assert code == 0, worker.output()
        assert "PyGILState" not in worker.output()


async def test_killed_worker_job_finishes_on_a_new_worker(spawn: Any, producer: Any) -> None:
    first = spawn("first")
    handle = await producer.schedule_job("proc-stuck-once", {})

    async def first_attempt_running() -> None:
        while True:
            info = await producer.get_job_status(handle.job_id)
            if info is not None and info.progress == 10:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(first_attempt_running(), 90)
    first.proc.kill()  # SIGKILL mid-activity: no cleanup, no goodbye to Temporal
    await first.wait()
    mid = await producer.get_job_status(handle.job_id)
    assert mid.status is JobStatus.PROCESSING
    assert mid.attempts == 1

    second = spawn("second")
    info = await producer.wait_for_job(handle.job_id, timeout=120)
    assert info.status is JobStatus.COMPLETED, second.output()
    assert info.result == {"finished_on_attempt": 2}
    assert info.attempts == 2
    second.proc.send_signal(signal.SIGTERM)
    assert await second.wait() == 0, second.output()
