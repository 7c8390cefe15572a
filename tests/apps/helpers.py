"""Small database helpers shared by jobrunner's own tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from psycopg import sql

T = TypeVar("T")


async def fetch(runner: Any, query: str, *params: Any) -> list[dict[str, Any]]:
    """Run ``query`` with ``{schema}`` replaced by the runner's quoted schema."""
    text = sql.SQL(query).format(schema=sql.Identifier(runner.schema))
    async with runner.db.connection() as conn:
        cur = await conn.execute(text, params or None)
        if cur.description is None:
            return []
        return list(await cur.fetchall())


async def count_jobs(runner: Any) -> int:
    """Rows in ``jobs`` (every tenant)."""
    rows = await fetch(runner, "SELECT count(*) AS n FROM {schema}.jobs")
    return int(rows[0]["n"])


async def count_details(runner: Any) -> int:
    """Rows in ``job_details`` (every tenant)."""
    rows = await fetch(runner, "SELECT count(*) AS n FROM {schema}.job_details")
    return int(rows[0]["n"])


async def job_row(runner: Any, job_id: uuid.UUID) -> dict[str, Any]:
    """The raw ``jobs`` row (all columns) of ``job_id``."""
    rows = await fetch(runner, "SELECT * FROM {schema}.jobs WHERE job_id = %s", job_id)
    assert rows, f"no jobs row for {job_id}"
    return rows[0]


async def details(runner: Any, job_id: uuid.UUID, step: str | None = None) -> list[dict[str, Any]]:
    """``job_details`` rows of a job in write order, optionally of one step name."""
    rows = await fetch(
        runner,
        "SELECT * FROM {schema}.job_details WHERE job_id = %s ORDER BY processed_at, detail_id",
        job_id,
    )
    return [r for r in rows if step is None or r["step_name"] == step]


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``accept`` holds (only where no event can be awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        await asyncio.sleep(interval)


async def status_of(runner: Any, job_id: uuid.UUID) -> str:
    """The job's raw status text."""
    return str((await job_row(runner, job_id))["status"])


async def install_status_log(runner: Any) -> None:
    """Record every status change of ``jobs`` in ``{schema}.status_log`` (test-only trigger)."""
    await fetch(
        runner,
        """
        CREATE TABLE {schema}.status_log (
            seq bigserial PRIMARY KEY, job_id uuid, old_status text, new_status text,
            attempts int);
        CREATE FUNCTION {schema}.log_status() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
                INSERT INTO status_log (job_id, old_status, new_status, attempts)
                VALUES (NEW.job_id,
                        CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.status::text END,
                        NEW.status::text, NEW.attempts);
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER log_status AFTER INSERT OR UPDATE ON {schema}.jobs
            FOR EACH ROW EXECUTE FUNCTION {schema}.log_status();
        """.replace("INSERT INTO status_log", "INSERT INTO {schema}.status_log"),
    )


async def status_history(runner: Any, job_id: uuid.UUID) -> list[str]:
    """Statuses a job went through (needs :func:`install_status_log`)."""
    rows = await fetch(
        runner, "SELECT new_status FROM {schema}.status_log WHERE job_id = %s ORDER BY seq", job_id
    )
    return [r["new_status"] for r in rows]
