"""A handler of durable steps for the kill -9 test (tests/test_durable_steps_kill.py).

Run as ``jobrunner-worker --app apps.steps_app`` with ``PYTHONPATH`` set to ``tests/``. The
invoice chain: close the billing cycle, render the invoices, zip them, email them; each step's
side effect is a row in the ledger table ``data["ledger"]`` (committed by the step function
before it returns). ``data["pause"]`` says where an attempt stops for the test to kill its
worker: ``{"<attempt>": ["after", step]}`` (the step's row is committed, the next has not
started) or ``["in", step]`` (the step's side effect is committed, its function has not
returned). The handler announces the pause with ``NOTIFY`` on ``data["channel"]`` (payload
``<attempt>:<where>:<step>``) and then waits for a file that never appears.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg
from psycopg import sql

from jobrunner import JobContext, RetryPolicy, job

STEPS = ("close-cycle", "render-invoices", "zip-invoices", "email-invoices")
POLICY = RetryPolicy(max_attempts=5, initial_interval=0.1, max_interval=0.2, jitter=0.0)


async def _connect() -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        os.environ["JOBRUNNER_DATABASE_URL"], autocommit=True
    )


async def _announce(data: dict[str, Any], payload: str) -> None:
    async with await _connect() as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", (data["channel"], payload))


async def _wait_for_kill(data: dict[str, Any]) -> None:
    # The test kills this process; the file it never creates is the only way out.
    never = os.path.join(data["dir"], "never")
    while not os.path.exists(never):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)


async def _side_effect(
    data: dict[str, Any], step: str, attempt: int, value: Any, pause_here: bool
) -> dict[str, Any]:
    """The step function: one ledger row (committed), then maybe the pause."""
    table = sql.Identifier(os.environ["JOBRUNNER_SCHEMA"], data["ledger"])
    async with await _connect() as conn:
        await conn.execute(
            sql.SQL("INSERT INTO {} (job_id, step, attempt, pid) VALUES (%s, %s, %s, %s)").format(
                table
            ),
            (data["job_key"], step, attempt, os.getpid()),
        )
    if pause_here:
        await _announce(data, f"{attempt}:in:{step}")
        await _wait_for_kill(data)
    return {"step": step, "attempt": attempt, "input": value}


@job("invoice-chain", retry=POLICY, timeout=600)
async def invoice_chain(ctx: JobContext, data: dict[str, Any]) -> list[Any]:
    """Four durable steps, each fed the previous one's stored result."""
    pause = data.get("pause", {}).get(str(ctx.attempt))
    value: Any = data["cycle"]
    results = []
    for step in STEPS:
        inside = pause == ["in", step]
        value = await ctx.run_step(step, _side_effect, data, step, ctx.attempt, value, inside)
        results.append(value["attempt"])
        if pause == ["after", step]:
            await _announce(data, f"{ctx.attempt}:after:{step}")
            await _wait_for_kill(data)
    return results
