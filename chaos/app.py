"""Handlers for the fault-injection scenarios.

Each run writes a ledger row (job, lease token, attempt, pid, worker) into
``<schema>.chaos_ledger`` in the same database when it starts and another when its work is
done, so the harness can count runs per job and tell which attempt's completion was accepted.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from jobrunner import JobContext, RetryPolicy, job

# Kills and outages interrupt attempts; a generous budget keeps "lost" meaning lost, not
# "ran out of attempts because the test kept killing the worker".
CHAOS_RETRY = RetryPolicy(max_attempts=25, initial_interval=0.1, max_interval=1.0)

_pool: AsyncConnectionPool | None = None


def _schema() -> str:
    return os.environ.get("JOBRUNNER_SCHEMA", "jobrunner")


async def _ledger_pool() -> AsyncConnectionPool:
    global _pool
    if _pool is None:
        pool = AsyncConnectionPool(
            os.environ["JOBRUNNER_DATABASE_URL"],
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True},
            open=False,
            check=AsyncConnectionPool.check_connection,
            name="chaos-ledger",
        )
        await pool.open(wait=False)
        _pool = pool
    return _pool


async def _ledger(ctx: JobContext, phase: str) -> None:
    schema = sql.Identifier(_schema())
    pool = await _ledger_pool()
    async with pool.connection(timeout=10) as conn:
        # worker_id is read from the job row: the worker holding the lease for this token.
        await conn.execute(
            sql.SQL(
                "INSERT INTO {}.chaos_ledger (job_id, token, attempt, pid, worker_id, phase) "
                "SELECT %(job_id)s, %(token)s, %(attempt)s, %(pid)s, "
                "(SELECT worker_id FROM {}.jobs WHERE tenant = %(tenant)s AND job_id = %(job_id)s),"
                " %(phase)s"
            ).format(schema, schema),
            {
                "job_id": ctx.job_id,
                "tenant": ctx.tenant,
                "token": ctx.lease_token,
                "attempt": ctx.attempt,
                "pid": os.getpid(),
                "phase": phase,
            },
        )


@job("chaos.work", retry=CHAOS_RETRY, timeout=60)
async def work(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Record the start, sleep ``data['ms']`` milliseconds, record the end."""
    await _ledger(ctx, "start")
    await asyncio.sleep(float(data.get("ms", 20)) / 1000)
    await _ledger(ctx, "done")
    return {"pid": os.getpid(), "token": ctx.lease_token}
