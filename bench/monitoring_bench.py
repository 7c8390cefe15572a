"""Monitoring with a million jobs in history: get_metrics and list_jobs timings and plans.

Loads 1,000,000 finished jobs (plus a few live ones) into a scratch schema with COPY, then
times ``get_metrics`` and the first ``list_jobs`` pages through the real functions and prints
``EXPLAIN (ANALYZE, BUFFERS)`` of the statements they run. ``--without-indexes`` also measures
with migration 0003's indexes dropped, to show what they buy.

    python bench/monitoring_bench.py [--dsn URL] [--rows 1000000] [--without-indexes] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from jobrunner import ALL_TENANTS
from jobrunner._db import _monitoring
from jobrunner._db._database import Database

TENANTS = [uuid.UUID(int=i + 1) for i in range(10)]
BIG_TENANT = TENANTS[0]  # half of all rows
# The monitoring indexes (0003), on the finished partition since 0009.
INDEXES_0003 = [
    "jobs_finished_tenant_created_idx",
    "jobs_finished_created_idx",
    "jobs_finished_tenant_status_idx",
    "jobs_finished_completed_idx",
]
COLUMNS = (
    "tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type, "
    "queue, run_at, data, error, attempts, max_attempts, started_at, completed_at"
)


def _rows(count: int, seed: int = 7) -> io.StringIO:
    """Tab-separated rows for COPY: 90% completed, 8% failed, 2% cancelled over 30 days."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = io.StringIO()
    names = ["send_email", "generate_invoice", "sync_calendar", "cleanup", "report"]
    for _ in range(count):
        tenant = BIG_TENANT if rng.random() < 0.5 else rng.choice(TENANTS[1:])
        r = rng.random()
        status = "completed" if r < 0.90 else "failed" if r < 0.98 else "cancelled"
        created = now - timedelta(seconds=rng.random() * 30 * 86400)
        started = created + timedelta(milliseconds=rng.randint(5, 2000))
        done = started + timedelta(milliseconds=rng.randint(5, 5000))
        error = (
            '{"type": "ValueError", "message": "upstream said no", "traceback": null}'
            if status == "failed"
            else "\\N"
        )
        runner = "postgres" if rng.random() < 0.8 else "temporal"
        naive = created.replace(tzinfo=None).isoformat()
        out.write(
            f"{tenant}\t{uuid.uuid4()}\t{rng.choice(names)}\t{{}}\t{status}\t{naive}\t{naive}\t"
            f"{uuid.UUID(int=0)}\t{runner}\tdefault\t{created.isoformat()}\t{{}}\t{error}\t1\t3\t"
            f"{started.isoformat()}\t{done.isoformat()}\n"
        )
    out.seek(0)
    return out


async def load(dsn: str, schema: str, rows: int) -> None:
    db = Database(dsn, schema=schema)
    await db.migrate()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        table = sql.SQL("{}.jobs").format(sql.Identifier(schema))
        started = time.perf_counter()
        chunk = 200_000
        for start in range(0, rows, chunk):
            data = _rows(min(chunk, rows - start), seed=start)
            copy_sql = sql.SQL("COPY {} (" + COLUMNS + ") FROM STDIN").format(table)
            async with conn.cursor().copy(copy_sql) as copy:
                while block := data.read(1 << 20):
                    await copy.write(block)
        # a few live jobs so the queue-age figure has something to find
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (tenant, type, status, user_id, run_at) "
                "SELECT %s, 'live', 'queued', %s, now() - make_interval(secs => g) "
                "FROM generate_series(1, 1000) g"
            ).format(table),
            (BIG_TENANT, uuid.UUID(int=0)),
        )
        print(
            f"loaded {rows:,} finished + 1,000 queued jobs in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        await conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))
        print(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
    await db.close()


async def timed(label: str, make: Any, repeat: int = 7) -> float:
    await make()  # warm the cache and the pool
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await make()
        samples.append((time.perf_counter() - t0) * 1000)
    median = statistics.median(samples)
    print(f"  {label:<52} median {median:8.1f} ms   (min {min(samples):.1f}, n={repeat})")
    return median


async def explain(db: Database, label: str, query: str, params: dict[str, Any]) -> None:
    async with db.connection() as conn:
        cur = await conn.execute(
            ("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query).encode(), params
        )
        plan = [r["QUERY PLAN"] for r in await cur.fetchall()]
    print(f"\n--- EXPLAIN (ANALYZE, BUFFERS) {label}")
    for line in plan:
        print("   ", line)


async def measure(dsn: str, schema: str, *, plans: bool) -> dict[str, float]:
    db = Database(dsn, schema=schema, max_size=2)
    await db.open()
    figures: dict[str, float] = {}
    try:
        for label, tenant in (("tenant (50% of rows)", BIG_TENANT), ("ALL_TENANTS", ALL_TENANTS)):

            async def metrics(tenant: Any = tenant) -> Any:
                return await _monitoring.get_metrics(db, tenant=tenant)

            figures[f"get_metrics {label}"] = await timed(f"get_metrics, {label}", metrics)
            for extra, filters in (
                ("first page", {}),
                ("first page status=failed", {"status": "failed"}),
                ("first page name=cleanup", {"name": "cleanup"}),
                ("first page search='upstream'", {"search": "upstream"}),
            ):

                async def page(tenant: Any = tenant, filters: Any = filters) -> Any:
                    return await _monitoring.list_jobs(db, tenant=tenant, limit=50, **filters)

                figures[f"list_jobs {extra} {label}"] = await timed(
                    f"list_jobs {extra}, {label}", page
                )
            first = await _monitoring.list_jobs(db, tenant=tenant, limit=50)

            async def second(tenant: Any = tenant, cursor: Any = first.next_cursor) -> Any:
                return await _monitoring.list_jobs(db, tenant=tenant, limit=50, cursor=cursor)

            figures[f"list_jobs page 2 {label}"] = await timed(
                f"list_jobs page 2 (cursor), {label}", second
            )
        if plans:
            scoped = {"tenant": BIG_TENANT}
            await explain(
                db,
                "get_metrics (tenant)",
                db.queries.monitoring_metrics.replace("/*tenant*/", "AND tenant = %(tenant)s"),
                scoped,
            )
            await explain(
                db,
                "get_metrics (ALL_TENANTS)",
                db.queries.monitoring_metrics.replace("/*tenant*/", ""),
                {},
            )
            await explain(
                db,
                "list_jobs first page (tenant)",
                db.queries.monitoring_list_jobs.replace("/*filters*/", "AND tenant = %(tenant)s"),
                {**scoped, "limit": 51},
            )
            await explain(
                db,
                "list_jobs first page (ALL_TENANTS)",
                db.queries.monitoring_list_jobs.replace("/*filters*/", ""),
                {"limit": 51},
            )
    finally:
        await db.close()
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--schema", default="bench_monitoring")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--without-indexes", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    args = parser.parse_args()
    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(args.schema))
        )
        row = await (await conn.execute("SHOW server_version")).fetchone()
        print(f"PostgreSQL {row[0] if row else '?'}")
    try:
        await load(args.dsn, args.schema, args.rows)
        print("\nwith migration 0003's indexes:")
        with_idx = await measure(args.dsn, args.schema, plans=True)
        if args.without_indexes:
            async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
                for name in INDEXES_0003:
                    await conn.execute(
                        sql.SQL("DROP INDEX {}.{}").format(
                            sql.Identifier(args.schema), sql.Identifier(name)
                        )
                    )
            print("\nwithout them (0001 indexes only):")
            without = await measure(args.dsn, args.schema, plans=False)
            print("\nsummary (median ms): with 0003 / without")
            for key, value in with_idx.items():
                print(f"  {key:<58} {value:8.1f} / {without[key]:8.1f}")
    finally:
        if not args.keep:
            async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
                await conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(args.schema))
                )


if __name__ == "__main__":
    asyncio.run(main())
