"""Switching flow control on while workers claim: a limit is never exceeded by new claims.

The plain claim (flow control off) reads ``flow_state`` ``FOR SHARE``: the transaction that
switches flow control on waits for every plain claim in flight, and a plain claim that starts
while the switch is pending waits for it and then sees flow control on (docs/fairness.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
MakeRunner = Callable[..., Awaitable[PostgresJobRunner]]


def _params(limit: int, version: int) -> dict[str, Any]:
    """A claim's parameters as a worker's FlowGate passes them (no schedule state yet)."""
    return {
        "queues": ["default"],
        "limit": limit,
        "worker_id": uuid.uuid4(),
        "lease_seconds": 30.0,
        "fair": True,
        "version": version,
        "vclock": 0.0,
        "pass_tenants": [],
        "pass_values": [],
    }


async def _version(runner: PostgresJobRunner) -> int:
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.flow_state)
        row = await cur.fetchone()
    assert row is not None
    return int(row["version"])


def _schema(runner: PostgresJobRunner) -> str:
    return psycopg.sql.Identifier(runner.schema).as_string(None)


async def _wait_for_lock_wait(
    runner: PostgresJobRunner, *, pid: int | None = None, query: str | None = None
) -> None:
    """Until a backend (``pid``, or one running a statement containing ``query``) waits.

    Polls pg_locks: a lock wait in another session offers no event to await.
    """
    deadline = time.monotonic() + 30
    async with runner.db.connection() as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE NOT l.granted AND a.wait_event_type = 'Lock' "
                "AND l.pid <> pg_backend_pid() AND (%(pid)s::int IS NULL OR l.pid = %(pid)s) "
                "AND (%(q)s::text IS NULL OR strpos(a.query, %(q)s) > 0)",
                {"pid": pid, "q": query},
            )
            row = await cur.fetchone()
            if row and row["n"]:
                return
            assert time.monotonic() < deadline, "no backend waits on a lock"
            await asyncio.sleep(0.01)


async def test_switching_on_waits_for_a_plain_claim_in_flight(make_runner: MakeRunner) -> None:
    runner = await make_runner(require_registered=False)
    await runner.schedule_jobs("work", [{} for _ in range(20)], tenant=A)
    version = await _version(runner)
    claimer = await runner.db.dedicated_connection()
    try:
        await claimer.execute("BEGIN")
        cur = await claimer.execute(runner.db.queries.claim_jobs, _params(10, version))
        assert len(await cur.fetchall()) == 10  # claimed, not committed yet
        change = asyncio.create_task(runner.flow.set_concurrency_limit(tenant=A, limit=2))
        await _wait_for_lock_wait(runner, query=f"{_schema(runner)}.flow_state")
        assert not change.done()  # the switch waits for the claim in flight
        await claimer.execute("COMMIT")
        await change
    finally:
        await claimer.close()
    # every claim from now on sees the 10 running attempts: nothing more for A
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.claim_jobs, _params(10, version))
        assert await cur.fetchall() == []  # the lock-free claim yields (limit on)
        cur = await conn.execute(runner.db.queries.claim_jobs, _params(10, version + 1))
        assert await cur.fetchall() == []  # whatever version it was given
        async with conn.transaction():
            await conn.execute(
                runner.db.queries.flow_claim_lock, {"key": f"jobrunner-flow:{runner.schema}"}
            )
            cur = await conn.execute(runner.db.queries.claim_jobs_fair, _params(10, version))
            assert await cur.fetchall() == []  # 10 running >= limit 2


@pytest.mark.parametrize("change", ["limit", "pause"])
async def test_a_plain_claim_during_the_switch_reads_the_new_state(
    make_runner: MakeRunner, change: str
) -> None:
    """A claim that starts while a change is being committed waits for it and claims nothing.

    ``limit``: flow_state.enabled goes on. ``pause``: only the rules and the version change;
    the claim's snapshot predates the pause, so it must yield on the version alone.
    """
    runner = await make_runner(require_registered=False)
    await runner.schedule_jobs("work", [{} for _ in range(5)], tenant=A)
    version = await _version(runner)
    switch = await runner.db.dedicated_connection()
    try:
        await switch.execute("BEGIN")
        if change == "limit":
            await switch.execute(f"UPDATE {_schema(runner)}.flow_state SET enabled = true WHERE id")
        else:
            await switch.execute(
                runner.db.queries.flow_save_rule,
                {
                    "tenant": A,
                    "name": None,
                    "max_running": None,
                    "rate_count": None,
                    "rate_period": None,
                    "paused": True,
                    "weight": None,
                },
            )
            await switch.execute(runner.db.queries.flow_refresh_state, {"fair": None})

        pids: asyncio.Queue[int] = asyncio.Queue()

        async def plain_claim() -> list[dict[str, Any]]:
            async with runner.db.connection() as conn:
                pids.put_nowait(conn.info.backend_pid)
                cur = await conn.execute(runner.db.queries.claim_jobs, _params(5, version))
                return list(await cur.fetchall())

        claim = asyncio.create_task(plain_claim())
        await _wait_for_lock_wait(runner, pid=await pids.get())
        assert not claim.done()
        await switch.execute("COMMIT")
        assert await claim == []  # it waited for the switch and then saw the new state
    finally:
        await switch.close()
    # Guard the guard: with the version it now reads, the claim would take A's jobs were they
    # not paused (limit: it yields whatever the version).
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.claim_jobs, _params(5, version + 1))
        assert await cur.fetchall() == []
    await runner.flow.clear(tenant=A)
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.flow_state)
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(runner.db.queries.claim_jobs, _params(5, int(row["version"])))
        assert len(await cur.fetchall()) == 5


async def test_a_limit_set_while_workers_drain_a_backlog_is_never_exceeded(
    make_runner: MakeRunner, registry: Any
) -> None:
    """Workers drain A's backlog with the plain claim; a limit arrives mid-drain.

    Attempts already running when ``set_concurrency_limit`` returns finish (a limit below the
    running count does not stop them); every job claimed afterwards starts only while fewer
    than ``limit`` run, so whenever a new one runs, at most ``limit`` run in total.
    """
    limit = 3
    progress = {"done": 0}
    busy = asyncio.Event()

    async def work(ctx: Any, data: dict[str, Any]) -> None:
        await asyncio.sleep(0.002)  # simulated work, not synchronisation
        progress["done"] += 1
        if progress["done"] >= 200:
            busy.set()

    registry.add("work", work)
    runner = await make_runner()
    schema = _schema(runner)
    most_running_at_switch = 0
    for _round in range(3):
        progress["done"] = 0
        busy.clear()
        await runner.schedule_jobs("work", [{} for _ in range(2_000)], tenant=A)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):  # fresh workers: they start on the plain claim
                await stack.enter_async_context(
                    running_worker(runner, concurrency=16, claim_batch=16)
                )
            await asyncio.wait_for(busy.wait(), 60)
            await runner.flow.set_concurrency_limit(tenant=A, limit=limit)
            async with runner.db.connection() as conn:
                cur = await conn.execute(
                    f"SELECT array_agg(job_id) AS ids, clock_timestamp() AS at FROM {schema}.jobs"
                    " WHERE tenant = %(t)s AND status = 'processing'",
                    {"t": A},
                )
                row = await cur.fetchone()
                assert row is not None
                running_then = list(row["ids"] or [])
                most_running_at_switch = max(most_running_at_switch, len(running_then))
                samples = 0
                deadline = time.monotonic() + 60
                while True:  # sample until ten jobs claimed under the limit have finished
                    cur = await conn.execute(
                        f"""
                        SELECT count(*) FILTER (WHERE status = 'processing') AS total,
                               count(*) FILTER (WHERE status = 'processing'
                                                  AND job_id <> ALL(%(s)s::uuid[])) AS new,
                               count(*) FILTER (WHERE status = 'completed'
                                                  AND started_at > %(at)s) AS finished
                        FROM {schema}.jobs WHERE tenant = %(t)s
                        """,
                        {"t": A, "s": running_then, "at": row["at"]},
                    )
                    got = await cur.fetchone()
                    assert got is not None
                    samples += 1
                    assert got["new"] == 0 or got["total"] <= limit, (got, len(running_then))
                    if got["finished"] >= 10:
                        break
                    assert time.monotonic() < deadline, got
                assert samples > 1
            await runner.flow.clear(tenant=A)
            await runner.flow.purge_tenant(A)
    # the drains really ran past the new limit: more were running than it allows
    assert most_running_at_switch > limit
