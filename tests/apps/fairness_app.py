"""Handlers for the fairness tests' worker processes (``--app apps.fairness_app``).

Every handler writes its start and end (database clock) to ``flow_ledger`` in the worker's
schema, so the test can compute how many attempts of a scope overlapped.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from jobrunner.registry import default_registry

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.flow_ledger (
    job_id  UUID PRIMARY KEY,
    tenant  UUID NOT NULL,
    name    TEXT NOT NULL,
    pid     INTEGER NOT NULL,
    started TIMESTAMPTZ NOT NULL,
    ended   TIMESTAMPTZ
)
"""

_pool: AsyncConnectionPool | None = None


async def _ledger() -> AsyncConnectionPool:
    global _pool
    if _pool is None:
        _pool = AsyncConnectionPool(
            os.environ["JOBRUNNER_DATABASE_URL"],
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True},
        )
        await _pool.open()
    return _pool


def _table() -> sql.Composed:
    return sql.SQL("{}.flow_ledger").format(sql.Identifier(os.environ["JOBRUNNER_SCHEMA"]))


async def _record(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    pool = await _ledger()
    table = _table()
    async with pool.connection() as conn:
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (job_id, tenant, name, pid, started) "
                "VALUES (%s, %s, %s, %s, clock_timestamp()) ON CONFLICT (job_id) DO NOTHING"
            ).format(table),
            (ctx.job_id, ctx.tenant, ctx.name, os.getpid()),
        )
    await asyncio.sleep(float(data.get("ms", 20)) / 1000)
    async with pool.connection() as conn:
        await conn.execute(
            sql.SQL("UPDATE {} SET ended = clock_timestamp() WHERE job_id = %s").format(table),
            (ctx.job_id,),
        )
    return {"pid": os.getpid()}


async def work(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A job of name ``work``."""
    return await _record(ctx, data)


async def report(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A job of name ``report`` (limited by name across tenants in the tests)."""
    return await _record(ctx, data)


async def ping(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A job of name ``ping`` (rate-limited in the tests)."""
    return await _record(ctx, data)


async def quick(ctx: Any, data: dict[str, Any]) -> None:
    """No ledger: for the fairness scenario, where only claim times matter."""
    ms = float(data.get("ms", 0))
    if ms:
        await asyncio.sleep(ms / 1000)


_registry = default_registry()
for _name, _handler in (("work", work), ("report", report), ("ping", ping), ("quick", quick)):
    _registry.add(_name, _handler)
