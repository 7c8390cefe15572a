"""Enqueueing jobs with dependencies on PostgreSQL through every door: the caller's
transaction (async and sync connections: written if and only if it commits; a refusal rolls
back only its savepoint), the sync runner, and the rows written (edges, counts, flags)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobrunner import (
    DependencyError,
    JobContext,
    JobHandlerRegistry,
    JobStatus,
    SyncJobRunner,
)
from jobrunner._jobargs import new_job_id
from jobrunner.backends.postgres import PostgresJobRunner


async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
    return None


async def _rows(runner: PostgresJobRunner, query: str, *params: Any) -> list[dict[str, Any]]:
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            sql.SQL(query).format(schema=sql.Identifier(runner.schema)), params or None
        )
        return list(await cur.fetchall())


async def test_in_the_callers_transaction_rollback_commit_and_refusal(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("tx", noop)
    first = await runner.schedule_job("tx")
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
        rolled = await runner.schedule_job("tx", depends_on=[first.job_id], connection=conn)
        await conn.rollback()
        assert await runner.get_job_status(rolled.job_id) is None
        assert await _rows(runner, "SELECT * FROM {schema}.job_dependencies") == []
        kept = await runner.schedule_job("tx", depends_on=[first.job_id], connection=conn)
        with pytest.raises(DependencyError):
            await runner.schedule_job("tx", depends_on=[new_job_id()], connection=conn)
        batch = await runner.schedule_jobs(
            "tx", [{}, {}], depends_on=[first.job_id, kept.job_id], connection=conn
        )
        await conn.commit()  # the refusal rolled back its savepoint only
    info = await runner.get_job_status(kept.job_id)
    assert info is not None and info.status is JobStatus.WAITING
    edges = await _rows(
        runner,
        "SELECT depends_on, job_id, resolved, run_on_failure FROM {schema}.job_dependencies",
    )
    assert len(edges) == 1 + 2 * 2
    assert not any(e["resolved"] or e["run_on_failure"] for e in edges)
    flags = await _rows(
        runner,
        "SELECT job_id, dependencies_left, has_dependents FROM {schema}.jobs ORDER BY job_id",
    )
    by_id = {f["job_id"]: f for f in flags}
    assert by_id[first.job_id]["has_dependents"] and by_id[kept.job_id]["has_dependents"]
    assert by_id[kept.job_id]["dependencies_left"] == 1
    assert [by_id[h.job_id]["dependencies_left"] for h in batch] == [2, 2]


def test_the_sync_runner_and_a_sync_connection(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    registry.add("s", noop)
    with SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2)
    ) as sync:
        first = sync.schedule_job("s")
        second = sync.schedule_job("s", depends_on=[first.job_id], on_dependency_failure="run")
        info = sync.get_job_status(second.job_id)
        assert info is not None and info.status is JobStatus.WAITING
        with psycopg.connect(jobrunner_dsn) as conn:
            third = sync.schedule_job("s", depends_on=[second.job_id], connection=conn)
            with pytest.raises(DependencyError):
                sync.schedule_jobs("s", [{}], depends_on=[new_job_id()], connection=conn)
            conn.commit()
        assert sync.cancel_job(first.job_id)
        details = sync.get_job_details(third.job_id)
        assert details is not None
        assert [d.job_id for d in details.dependencies] == [second.job_id]
        # second runs anyway (its dependency was cancelled): released, so third still waits
        second_info = sync.get_job_status(second.job_id)
        assert second_info is not None and second_info.status is JobStatus.QUEUED
        assert details.job.status is JobStatus.WAITING
