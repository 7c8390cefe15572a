"""Dependency releases under concurrency, on PostgreSQL (migration 0012).

Two races the release must survive, each forced deterministically by holding a row lock
while the other side starts, then letting go:

* an enqueue that names a running job as a dependency commits while that job's outcome
  waits for the job's row: the outcome's statement started before the edge existed, and its
  release (the trigger, whose statements take a new snapshot) must still see it;
* two dependencies of one job finish at the same moment in two workers: the dependent is
  released once (its count reaches 0 once, under its row lock), never twice, never not at all.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobrunner import JobStatus
from jobrunner._queue._store import AttemptRef, CompletedAttempt, OutcomeBatch
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.registry import JobHandlerRegistry


async def noop(ctx: Any, data: dict[str, Any]) -> None:
    return None


@pytest.fixture
def race_registry(registry: JobHandlerRegistry) -> JobHandlerRegistry:
    registry.add("race.job", noop)
    return registry


async def _blocked_by(runner: PostgresJobRunner, pid: int, count: int = 1) -> None:
    """Until ``count`` backends wait behind ``pid`` (for a lock it holds, or queued behind
    one that does: a second waiter for a row waits for the first). A server condition,
    polled: there is no event for "a statement is now blocked"."""
    async with await psycopg.AsyncConnection.connect(runner.db.conninfo, autocommit=True) as conn:
        for _ in range(2000):
            cur = await conn.execute(
                "WITH first AS (SELECT pid FROM pg_stat_activity"
                "               WHERE %(pid)s = ANY(pg_blocking_pids(pid)))"
                " SELECT (SELECT count(*) FROM first)"
                "      + (SELECT count(*) FROM pg_stat_activity a"
                "         WHERE NOT %(pid)s = ANY(pg_blocking_pids(a.pid))"
                "           AND EXISTS (SELECT 1 FROM first f"
                "                       WHERE f.pid = ANY(pg_blocking_pids(a.pid))))",
                {"pid": pid},
            )
            row = await cur.fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.005)
    raise AssertionError(f"fewer than {count} statements ever waited for backend {pid}")


async def _running(runner: PostgresJobRunner, job_id: uuid.UUID) -> AttemptRef:
    """Mark ``job_id`` claimed (attempt 1, token 1) as a worker's claim would."""
    async with runner.db.connection() as conn:
        await conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'processing', attempts = 1, lease_token = 1, "
                "lease_expires_at = now() + interval '1 minute' WHERE job_id = %s"
            ).format(sql.Identifier(runner.schema, "jobs_live")),
            (job_id,),
        )
    return AttemptRef(uuid.UUID(int=0), job_id, 1)


async def _complete(runner: PostgresJobRunner, ref: AttemptRef) -> None:
    store = runner.queue_store()
    try:
        batch = OutcomeBatch(completed=[CompletedAttempt(ref, "null", time.time(), 1.0)])
        await store.record_outcomes(batch, worker_id=uuid.uuid4(), per_statement=100)
    finally:
        await store.close()


async def _row(runner: PostgresJobRunner, job_id: uuid.UUID) -> dict[str, Any]:
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT status::text AS status, dependencies_left FROM {} WHERE job_id = %s"
            ).format(sql.Identifier(runner.schema, "jobs")),
            (job_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def test_an_outcome_waiting_for_an_enqueue_releases_its_new_dependent(
    runner: PostgresJobRunner, race_registry: JobHandlerRegistry
) -> None:
    first = await runner.schedule_job("race.job")
    ref = await _running(runner, first.job_id)
    async with await psycopg.AsyncConnection.connect(runner.db.conninfo) as caller:
        cur = await caller.execute("SELECT pg_backend_pid()")
        pid_row = await cur.fetchone()
        assert pid_row is not None
        # the enqueue locks its dependency until the caller's transaction commits
        dependent = await runner.schedule_job(
            "race.job", depends_on=[first.job_id], connection=caller
        )
        outcome = asyncio.ensure_future(_complete(runner, ref))
        await _blocked_by(runner, pid_row[0])
        await caller.commit()
    await outcome
    assert await _row(runner, first.job_id) == {"status": "completed", "dependencies_left": 0}
    assert await _row(runner, dependent.job_id) == {"status": "queued", "dependencies_left": 0}


async def test_two_dependencies_finishing_at_once_release_the_dependent_once(
    runner: PostgresJobRunner, race_registry: JobHandlerRegistry
) -> None:
    a = await runner.schedule_job("race.job")
    b = await runner.schedule_job("race.job")
    dependent = await runner.schedule_job("race.job", depends_on=[a.job_id, b.job_id])
    refs = [await _running(runner, a.job_id), await _running(runner, b.job_id)]
    table = sql.Identifier(runner.schema, "jobs_live")
    async with await psycopg.AsyncConnection.connect(runner.db.conninfo) as holder:
        cur = await holder.execute("SELECT pg_backend_pid()")
        pid_row = await cur.fetchone()
        assert pid_row is not None
        # hold the dependent's row so both releases reach it before either can go on
        await holder.execute(
            sql.SQL("SELECT 1 FROM {} WHERE job_id = %s FOR NO KEY UPDATE").format(table),
            (dependent.job_id,),
        )
        outcomes = [asyncio.ensure_future(_complete(runner, ref)) for ref in refs]
        await _blocked_by(runner, pid_row[0], count=2)
        await holder.commit()
    await asyncio.gather(*outcomes)
    assert await _row(runner, dependent.job_id) == {"status": "queued", "dependencies_left": 0}
    info = await runner.get_job_status(dependent.job_id)
    assert info is not None and info.status is JobStatus.QUEUED


async def test_many_pairs_finishing_concurrently_release_each_dependent_once(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    runs: dict[str, int] = {}

    async def count(ctx: Any, data: dict[str, Any]) -> None:
        runs[data["k"]] = runs.get(data["k"], 0) + 1

    registry.add("race.count", count)
    deps = await runner.schedule_jobs("race.count", [{"k": f"d{i}"} for i in range(400)])
    dependents = [
        await runner.schedule_job(
            "race.count", {"k": f"w{i}"}, depends_on=[deps[2 * i].job_id, deps[2 * i + 1].job_id]
        )
        for i in range(200)
    ]
    from jobrunner.testing import running_worker

    async with (
        running_worker(runner, concurrency=20, claim_batch=5),
        running_worker(runner, concurrency=20, claim_batch=5),
    ):
        for handle in dependents:
            info = await runner.wait_for_job(handle.job_id, timeout=60)
            assert info.status is JobStatus.COMPLETED
    assert runs == {**{f"d{i}": 1 for i in range(400)}, **{f"w{i}": 1 for i in range(200)}}
