"""Transactional enqueue: the job exists if and only if the caller's transaction commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from apps.helpers import count_jobs
from jobrunner import (
    DatabaseError,
    InvalidArgumentError,
    JobContext,
    JobHandlerRegistry,
    JobStatus,
    SyncJobRunner,
)
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker


async def noop(ctx: JobContext, data: dict[str, Any]) -> str:
    return "ran"


async def test_async_connection_rollback_and_commit(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("tx", noop)
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
        rolled = await runner.schedule_job("tx", {"n": 1}, connection=conn)
        at = await runner.schedule_job_at(
            "tx", {"n": 2}, datetime.now(UTC) + timedelta(hours=1), connection=conn
        )
        bulk = await runner.schedule_jobs("tx", [{"n": 3}, {"n": 4}], connection=conn)
        # invisible to others until commit
        assert await runner.get_job_status(rolled.job_id) is None
        await conn.rollback()
        assert await count_jobs(runner) == 0
        for h in (rolled, at, *bulk):
            assert await runner.get_job_status(h.job_id) is None

        kept = await runner.schedule_job("tx", {"n": 5}, connection=conn)
        kept_bulk = await runner.schedule_jobs("tx", [{"n": 6}], connection=conn)
        assert await runner.get_job_status(kept.job_id) is None
        await conn.commit()
    assert await count_jobs(runner) == 2
    async with running_worker(runner):
        for h in (kept, *kept_bulk):
            info = await runner.wait_for_job(h.job_id, timeout=30)
            assert info.status is JobStatus.COMPLETED and info.result == "ran"


async def test_async_connection_with_transaction_block(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("tx", noop)
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn, autocommit=True) as conn:
        with pytest.raises(RuntimeError):  # noqa: PT012 - the block is the caller's transaction
            async with conn.transaction():
                await runner.schedule_job("tx", {}, connection=conn)
                raise RuntimeError("business logic failed")
        assert await count_jobs(runner) == 0
        async with conn.transaction():
            handle = await runner.schedule_job("tx", {}, connection=conn)
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.QUEUED


async def test_async_singleton_on_connection(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("tx", noop)
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
        first = await runner.schedule_job("tx", {}, singleton_key="one", connection=conn)
        second = await runner.schedule_job("tx", {}, singleton_key="one", connection=conn)
        assert first.created and not second.created and first.job_id == second.job_id
        await conn.commit()
    assert await count_jobs(runner) == 1


async def test_callers_row_factory_does_not_matter(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("tx", noop)
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn, row_factory=dict_row) as conn:
        first = await runner.schedule_job("tx", {}, singleton_key="s", connection=conn)
        again = await runner.schedule_job("tx", {}, singleton_key="s", connection=conn)
        await conn.commit()
    assert first.created and not again.created and again.job_id == first.job_id
    info = await runner.get_job_status(first.job_id)
    assert info is not None and info.status is JobStatus.QUEUED


def test_sync_callers_row_factory_does_not_matter(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    registry.add("tx", noop)
    with SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=1)
    ) as sync:
        with psycopg.connect(jobrunner_dsn, row_factory=dict_row) as conn:
            first = sync.schedule_job("tx", {}, singleton_key="s", connection=conn)
            again = sync.schedule_job("tx", {}, singleton_key="s", connection=conn)
            conn.commit()
        assert first.created and not again.created and again.job_id == first.job_id
        assert sync.get_job_status(first.job_id) is not None


async def test_wrong_connection_types(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("tx", noop)
    with psycopg.connect(jobrunner_dsn) as sync_conn:
        with pytest.raises(InvalidArgumentError):
            await runner.schedule_job("tx", {}, connection=sync_conn)
        with pytest.raises(InvalidArgumentError):
            await runner.schedule_jobs("tx", [{}], connection=sync_conn)
    assert await count_jobs(runner) == 0


async def test_database_error_in_callers_transaction(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    """A failed caller transaction surfaces as a typed error, not a driver exception."""
    registry.add("tx", noop)
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1/0")
        with pytest.raises(DatabaseError):
            await runner.schedule_job("tx", {}, connection=conn)
        await conn.rollback()
    assert await count_jobs(runner) == 0


def test_sync_connection_rollback_and_commit(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    registry.add("tx", noop)
    sync = SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2)
    )
    try:
        with psycopg.connect(jobrunner_dsn) as conn:
            a = sync.schedule_job("tx", {"n": 1}, connection=conn)
            b = sync.schedule_job_at(
                "tx", {}, datetime.now(UTC) + timedelta(hours=1), connection=conn
            )
            c = sync.schedule_jobs("tx", [{}, {}], connection=conn)
            assert sync.get_job_status(a.job_id) is None
            conn.rollback()
            for h in (a, b, *c):
                assert sync.get_job_status(h.job_id) is None
            kept = sync.schedule_job("tx", {"n": 2}, connection=conn, tenant=str(uuid.UUID(int=7)))
            kept_bulk = sync.schedule_jobs("tx", [{"n": 3}], connection=conn)
            conn.commit()
        info = sync.get_job_status(kept.job_id, tenant=uuid.UUID(int=7))
        assert info is not None and info.status is JobStatus.QUEUED and info.tenant.int == 7
        assert sync.get_job_status(kept_bulk[0].job_id) is not None
        with psycopg.connect(jobrunner_dsn) as conn:
            with pytest.raises(TypeError, match="bogus"):
                sync.schedule_job("tx", {}, connection=conn, bogus=1)
            with pytest.raises(TypeError, match="bogus"):
                sync.schedule_jobs("tx", [{}], connection=conn, bogus=1)
            with pytest.raises(InvalidArgumentError):
                sync.schedule_job("tx", {"x": float("nan")}, connection=conn)
            conn.commit()
        with pytest.raises(InvalidArgumentError):
            sync.schedule_job("tx", {}, connection="not a connection")
    finally:
        sync.close()
    with psycopg.connect(jobrunner_dsn) as conn:
        row = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}.jobs").format(psycopg.sql.Identifier(schema))
        ).fetchone()
    assert row is not None and row[0] == 2
