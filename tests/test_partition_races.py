"""Races with a row that moves between the partitions of ``jobs`` (migration 0009).

An outcome or a cancel moves a job's row from jobs_live to jobs_finished. A statement that
was waiting for that row's lock then fails under READ COMMITTED ("tuple to be locked was
already moved to another partition due to concurrent update", SQLSTATE 40001) instead of
re-reading it, as it would within one table. The API statements that can meet this run again
(``retry_conflicts``) and then see the finished job.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.registry import JobHandlerRegistry


async def noop(ctx: Any, data: dict[str, Any]) -> None:
    return None


async def _waiting_for_lock(runner: PostgresJobRunner, mover_pid: int) -> None:
    """Until some backend waits for a lock held by ``mover_pid`` (a condition of the server,
    polled: there is no event to await for "a statement is now blocked")."""
    async with await psycopg.AsyncConnection.connect(runner.db.conninfo, autocommit=True) as conn:
        for _ in range(2000):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (mover_pid,),
            )
            row = await cur.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.005)
    raise AssertionError("the statement under test never waited for the moving row")


async def _move_while(
    runner: PostgresJobRunner, job_id: uuid.UUID, new_status: str, call: Any
) -> Any:
    """Move the job's row to jobs_finished in an open transaction, start ``call`` (it blocks
    on the row), commit the move, and return what ``call`` returned."""
    table = sql.Identifier(runner.schema, "jobs")
    async with await psycopg.AsyncConnection.connect(runner.db.conninfo) as mover:
        cur = await mover.execute("SELECT pg_backend_pid()")
        pid_row = await cur.fetchone()
        assert pid_row is not None
        await mover.execute(
            sql.SQL("UPDATE {} SET status = %s::{}, completed_at = now() WHERE job_id = %s").format(
                table, sql.Identifier(runner.schema, "job_status")
            ),
            (new_status, job_id),
        )
        task = asyncio.ensure_future(call())
        await _waiting_for_lock(runner, pid_row[0])
        await mover.commit()
    return await task


async def _claimed_job(runner: PostgresJobRunner) -> uuid.UUID:
    handle = await runner.schedule_job("race.job", {})
    async with runner.db.connection() as conn:
        await conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'processing', attempts = 1, lease_token = 1, "
                "lease_expires_at = now() + interval '1 minute' WHERE job_id = %s"
            ).format(sql.Identifier(runner.schema, "jobs_live")),
            (handle.job_id,),
        )
    return handle.job_id


@pytest.fixture
def race_registry(registry: JobHandlerRegistry) -> JobHandlerRegistry:
    registry.add("race.job", noop)
    return registry


async def test_cancel_waiting_for_a_job_that_completes_sees_it_completed(
    runner: PostgresJobRunner, race_registry: JobHandlerRegistry
) -> None:
    job_id = await _claimed_job(runner)
    cancelled = await _move_while(
        runner, job_id, "completed", lambda: runner.cancel_job(job_id, reason="late")
    )
    assert cancelled is False
    status = await runner.get_job_status(job_id)
    assert status is not None and status.status == "completed"
