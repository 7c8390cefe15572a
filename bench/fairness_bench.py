"""Fairness and flow-control figures (issue #9): drain with flow control off/on, B's start delay.

Usage (from the repository root)::

    python bench/fairness_bench.py                      # full: 100k backlog
    python bench/fairness_bench.py --backlog 5000 --drain 3000 --off-backlog 2000   # quick

Each workload runs in a fresh schema (dropped afterwards) with one in-process worker. Prints
one JSON line per figure and a Markdown table at the end (copied into docs/fairness.md).

* ``drain``: jobs/s draining ``--drain`` no-op jobs of 10 tenants with fair claiming switched
  off (``set_fair_claiming(False)``), on (the default, no lock), and on plus a non-binding
  concurrency limit per tenant (the serialised path); rounds interleaved.
* ``scenario``: tenant A enqueues ``--backlog`` jobs, then tenant B enqueues 100; B's start
  delay (claim time minus enqueue time, database clock) p50/p99 with A's backlog absent and
  present, with the worker defaults (``create_worker()``, fair on); and with fairness off on a
  smaller backlog for contrast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from jobrunner import JobHandlerRegistry
from jobrunner.backends.postgres import PostgresJobRunner

DSN = os.environ.get("JOBRUNNER_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
WORK_MS = 2.0
rows: list[tuple[str, str, float, str]] = []


def record(workload: str, metric: str, value: float, unit: str) -> None:
    rows.append((workload, metric, value, unit))
    print(
        json.dumps(
            {"workload": workload, "metric": metric, "value": round(value, 3), "unit": unit}
        ),
        flush=True,
    )


def registry() -> JobHandlerRegistry:
    reg = JobHandlerRegistry()

    async def noop(ctx: Any, data: dict[str, Any]) -> None:
        return None

    async def work(ctx: Any, data: dict[str, Any]) -> None:
        await asyncio.sleep(WORK_MS / 1000)

    reg.add("noop", noop)
    reg.add("work", work)
    return reg


async def fresh(dsn: str) -> PostgresJobRunner:
    runner = PostgresJobRunner(
        dsn, schema=f"fairbench_{uuid.uuid4().hex[:8]}", registry=registry(), pool_size=6
    )
    await runner.start()
    return runner


async def drop(runner: PostgresJobRunner) -> None:
    schema = runner.schema
    await runner.close()
    with psycopg.connect(runner.db.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def scalar(runner: PostgresJobRunner, query: str, *params: Any) -> Any:
    text = sql.SQL(query).format(schema=sql.Identifier(runner.schema))
    async with runner.db.connection() as conn:
        cur = await conn.execute(text, params or None)
        row = await cur.fetchone() if cur.description else None
    return None if row is None else next(iter(row.values()))


async def wait_count(runner: PostgresJobRunner, query: str, target: int, *params: Any) -> None:
    while int(await scalar(runner, query, *params)) < target:  # noqa: ASYNC110 - a DB condition
        await asyncio.sleep(0.02)


async def drain(n: int, mode: str, dsn: str) -> None:
    runner = await fresh(dsn)
    tenants = [uuid.uuid4() for _ in range(10)]
    try:
        for t in tenants:
            await runner.schedule_jobs("noop", [{}] * (n // len(tenants)), tenant=t)
        if mode == "off":
            await runner.flow.set_fair_claiming(False)
        if mode == "limits":
            for t in tenants:
                await runner.flow.set_concurrency_limit(tenant=t, limit=10_000)
        total = n // len(tenants) * len(tenants)
        worker = runner.create_worker(concurrency=100, claim_batch=100)
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        await wait_count(
            runner, "SELECT count(*) FROM {schema}.jobs WHERE status = 'completed'", total
        )
        elapsed = time.perf_counter() - started
        await worker.stop()
        await task
        record("drain", f"jobs_per_s_flow_{mode}", total / elapsed, "jobs/s")
    finally:
        await drop(runner)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def scenario(
    backlog: int, fair: bool, dsn: str, burst: int = 100, **worker_options: Any
) -> None:
    """B's start delay behind A's backlog, with the worker defaults unless ``worker_options``
    (the issue's figure is the defaults')."""
    runner = await fresh(dsn)
    big, small = uuid.uuid4(), uuid.uuid4()
    label = f"fair_{'on' if fair else 'off'}"
    try:
        if not fair:
            await runner.flow.set_fair_claiming(False)
        worker = runner.create_worker(**worker_options)
        task = asyncio.create_task(worker.run())
        await worker.started.wait()

        async def b_delays(tag: str) -> list[float]:
            await runner.schedule_jobs("work", [{}] * burst, tenant=small, metadata={"tag": tag})
            await wait_count(
                runner,
                "SELECT count(*) FROM {schema}.jobs WHERE tenant = %s "
                "AND metadata->>'tag' = %s AND started_at IS NOT NULL",
                burst,
                small,
                tag,
            )
            text = sql.SQL(
                "SELECT extract(epoch FROM started_at - (created_at AT TIME ZONE 'UTC')) * 1000 "
                "AS ms FROM {schema}.jobs WHERE tenant = %s AND metadata->>'tag' = %s"
            ).format(schema=sql.Identifier(runner.schema))
            async with runner.db.connection() as conn:
                cur = await conn.execute(text, (small, tag))
                return [float(r["ms"]) for r in await cur.fetchall()]

        alone = await b_delays("alone")
        for start in range(0, backlog, 10_000):
            await runner.schedule_jobs("work", [{}] * min(10_000, backlog - start), tenant=big)
        crowded = await b_delays("backlog")
        a_during = await scalar(
            runner,
            "SELECT count(*) FROM {schema}.jobs WHERE tenant = %s AND started_at BETWEEN "
            "(SELECT min(created_at AT TIME ZONE 'UTC') FROM {schema}.jobs "
            " WHERE tenant = %s AND metadata->>'tag' = 'backlog') AND "
            "(SELECT max(started_at) FROM {schema}.jobs WHERE tenant = %s)",
            big,
            small,
            small,
        )
        for name, values in (("alone", alone), (f"backlog_{backlog}", crowded)):
            record(f"scenario_{label}", f"b_p50_{name}", pct(values, 0.5), "ms")
            record(f"scenario_{label}", f"b_p99_{name}", pct(values, 0.99), "ms")
        record(f"scenario_{label}", f"a_claims_while_b_served_backlog_{backlog}", a_during, "jobs")
        await runner.flow.purge_tenant(big)
        await worker.stop()
        await task
    finally:
        await drop(runner)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--off-backlog", type=int, default=20_000)
    parser.add_argument(
        "--smoke", action="store_true", help="a few hundred jobs per workload (CI, nox smoke)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.drain, args.backlog, args.off_backlog = 300, 500, 300
    for mode in ("off", "fair", "limits", "off", "fair", "limits"):
        await drain(args.drain, mode, args.dsn)
    await scenario(args.backlog, True, args.dsn)
    await scenario(args.off_backlog, False, args.dsn)
    print("\n| workload | metric | value | unit |\n|---|---|---|---|")
    for workload, metric, value, unit in rows:
        print(f"| {workload} | {metric} | {value:,.1f} | {unit} |")


if __name__ == "__main__":
    asyncio.run(main())
