"""Durable steps survive kill -9 (issue 17): real worker processes on a real PostgreSQL.

The invoice chain of tests/apps/steps_app.py runs four durable steps, each writing one ledger
row as its side effect. Attempt 1's worker is killed between two steps, attempt 2's inside a
step (its side effect committed, its function not returned); a third worker finishes the job.
A completed step's side effect exists exactly once; the interrupted one at most twice.
The test waits on the handler's NOTIFY, never on a sleep.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from apps.helpers import details, fetch
from apps.steps_app import POLICY, STEPS, invoice_chain
from jobrunner import DatabaseError, JobHandlerRegistry, JobStatus
from jobrunner._context import JobContext
from jobrunner._db._store import JobStore
from jobrunner.backends.postgres import PostgresJobRunner
from test_worker_process import worker_process

WORKER_ARGS = ("--lease", "1.5", "--grace", "0.5", "--concurrency", "1")


@contextlib.asynccontextmanager
async def _listening(dsn: str, channel: str) -> AsyncIterator[asyncio.Queue[str]]:
    """The payloads of ``NOTIFY channel``, as they arrive."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

        async def pump() -> None:
            async for note in conn.notifies():
                queue.put_nowait(note.payload)

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _kill_when(dsn: str, schema: str, queue: asyncio.Queue[str], expected: str) -> None:
    """Start a worker, wait for the handler's announcement ``expected``, kill -9 it."""
    async with worker_process(dsn, schema, *WORKER_ARGS, app="apps.steps_app") as wp:
        got = await asyncio.wait_for(queue.get(), 60)
        assert got == expected, (got, wp.output)
        wp.proc.send_signal(signal.SIGKILL)
        assert await wp.wait() == -signal.SIGKILL


async def test_kill_9_between_and_inside_steps(
    runner: PostgresJobRunner,
    registry: JobHandlerRegistry,
    jobrunner_dsn: str,
    schema: str,
    tmp_path: Path,
) -> None:
    registry.add("invoice-chain", invoice_chain, retry=POLICY)  # the producer's policy
    ledger = f"ledger_{uuid.uuid4().hex[:8]}"
    await fetch(
        runner,
        f"CREATE TABLE {{schema}}.{ledger} (job_id text, step text, attempt int, pid int, "
        "at timestamptz DEFAULT clock_timestamp())",
    )
    channel = f"steps_{uuid.uuid4().hex[:8]}"
    data = {
        "ledger": ledger,
        "channel": channel,
        "dir": str(tmp_path),
        "job_key": "cycle-2024-05",
        "cycle": "2024-05",
        "pause": {"1": ["after", "render-invoices"], "2": ["in", "zip-invoices"]},
    }
    async with _listening(jobrunner_dsn, channel) as queue:
        handle = await runner.schedule_job("invoice-chain", data)
        await _kill_when(jobrunner_dsn, schema, queue, "1:after:render-invoices")
        await _kill_when(jobrunner_dsn, schema, queue, "2:in:zip-invoices")
        async with worker_process(jobrunner_dsn, schema, *WORKER_ARGS, app="apps.steps_app"):
            info = await runner.wait_for_job(handle.job_id, timeout=90)
    assert info.status is JobStatus.COMPLETED, info
    assert info.attempts == 3
    # Which attempt ran each step: 1 ran the first two, 3 re-ran the interrupted zip.
    assert info.result == [1, 1, 3, 3]

    rows = await fetch(runner, f"SELECT step, attempt FROM {{schema}}.{ledger} ORDER BY at")
    runs = collections.Counter(r["step"] for r in rows)
    assert runs == {"close-cycle": 1, "render-invoices": 1, "zip-invoices": 2, "email-invoices": 1}
    assert [(r["step"], r["attempt"]) for r in rows] == [
        ("close-cycle", 1),
        ("render-invoices", 1),
        ("zip-invoices", 2),  # interrupted inside: its side effect happened, its row did not
        ("zip-invoices", 3),
        ("email-invoices", 3),
    ]
    steps = [r for r in await details(runner, handle.job_id) if r["step_name"] in STEPS]
    assert [(r["step_name"], r["status"], r["retry_count"]) for r in steps] == [
        ("close-cycle", "completed", 1),
        ("render-invoices", "completed", 1),
        ("zip-invoices", "failed", 2),  # closed by the rescue of the killed attempt
        ("zip-invoices", "completed", 3),
        ("email-invoices", "completed", 3),
    ]
    assert all(r["metadata"]["durable"] is True for r in steps)
    assert steps[2]["result"]["type"] == "jobrunner.LeaseExpired"


async def test_the_shared_store_refuses_a_stale_attempts_step(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """The PostgreSQL statements themselves (the Temporal activity writes through the same
    JobStore): a context whose lease token is not the job's reads and writes nothing."""

    async def idle(ctx: JobContext, data: dict[str, object]) -> None:
        return None

    registry.add("idle", idle)
    handle = await runner.schedule_job("idle")
    store = JobStore(runner.db)
    row = (await fetch(runner, "SELECT * FROM {schema}.jobs WHERE job_id = %s", handle.job_id))[0]
    await fetch(
        runner,
        "UPDATE {schema}.jobs SET status = 'processing', lease_token = 7 WHERE job_id = %s",
        handle.job_id,
    )
    live = JobContext(handle.job_id, "idle", row["tenant"], 1, lease_token=7, _sink=store)
    stale = JobContext(handle.job_id, "idle", row["tenant"], 1, lease_token=6, _sink=store)

    begun = await store.begin_durable_step(stale, "charge")
    assert begun.state == "fenced" and stale.is_cancelled()
    begun = await store.begin_durable_step(live, "charge")
    assert begun.state == "started" and begun.detail_id is not None
    assert not await store.complete_durable_step(stale, begun.detail_id, '"x"', tries=1)
    assert await store.complete_durable_step(live, begun.detail_id, '"ok"', tries=1)
    again = await store.begin_durable_step(live, "charge")
    assert (again.state, again.result) == ("stored", "ok")
    # A step completed twice is refused by the database too (0010's unique index).
    other = await store.begin_durable_step(
        JobContext(handle.job_id, "idle", row["tenant"], 1, lease_token=7, _sink=store), "other"
    )
    assert other.detail_id is not None
    await fetch(
        runner,
        "UPDATE {schema}.job_details SET step_name = 'charge' WHERE detail_id = %s",
        other.detail_id,
    )
    with pytest.raises(DatabaseError, match="job_details_durable_step_idx"):
        await store.complete_durable_step(live, other.detail_id, '"twice"', tries=1)
    completed = await fetch(
        runner,
        "SELECT count(*) AS n FROM {schema}.job_details WHERE job_id = %s "
        "AND step_name = 'charge' AND status = 'completed'",
        handle.job_id,
    )
    assert completed[0]["n"] == 1
