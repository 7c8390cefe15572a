"""The cost of a dependency release next to the plain drain, on PostgreSQL (migration 0012).

Every variant drains the same number of jobs through one in-process worker (concurrency 32);
rounds interleave the variants (the machine is shared: compare the ratios within one run):

* ``plain``: independent jobs (the hot path: the release trigger's WHEN clause is all a job
  without dependents meets);
* ``plain_no_trigger``: the same in a schema whose release trigger is dropped (what 0012
  costs a job without dependents: the difference between the two);
* ``pairs``: half the jobs each have one dependent (the other half): one release per pair;
* ``fan_in``: all jobs but one are dependencies of the last (one edge resolved and one
  decrement of the same row per job);
* ``chain`` (concurrency 1, ``--chain`` jobs): each job depends on the one before, next to
  ``plain`` at concurrency 1 (the latency of a release: trigger, NOTIFY, claim).

    python bench/dependencies_bench.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

Prints one JSON line per variant, then a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from psycopg import sql

from jobrunner import JobContext, JobHandlerRegistry, ScheduledJob
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import isolated_schema, running_worker


def _registry() -> JobHandlerRegistry:
    registry = JobHandlerRegistry()

    async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("noop", noop)
    return registry


async def _enqueue(runner: PostgresJobRunner, variant: str, jobs: int) -> list[ScheduledJob]:
    if variant in ("plain", "plain_no_trigger"):
        return await runner.schedule_jobs("noop", [{} for _ in range(jobs)])
    if variant == "pairs":
        firsts = await runner.schedule_jobs("noop", [{} for _ in range(jobs // 2)])
        seconds = [await runner.schedule_job("noop", depends_on=[first.job_id]) for first in firsts]
        return firsts + seconds
    if variant == "fan_in":
        parts = await runner.schedule_jobs("noop", [{} for _ in range(jobs - 1)])
        last = await runner.schedule_job("noop", depends_on=[p.job_id for p in parts])
        return [*parts, last]
    if variant == "chain":
        handles = [await runner.schedule_job("noop")]
        for _ in range(jobs - 1):
            handles.append(await runner.schedule_job("noop", depends_on=[handles[-1].job_id]))
        return handles
    raise ValueError(variant)


async def _drain(runner: PostgresJobRunner, variant: str, jobs: int, concurrency: int) -> float:
    handles = await _enqueue(runner, variant, jobs)
    started = time.perf_counter()
    async with running_worker(runner, concurrency=concurrency, poll_interval=0.05):
        for handle in handles:
            info = await runner.wait_for_job(handle.job_id, timeout=600)
            assert info.status == "completed", info
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "JOBRUNNER_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per drain")
    parser.add_argument("--chain", type=int, default=200, help="jobs of the chain")
    parser.add_argument(
        "--variants", default="", help="comma-separated subset of the variants (default: all)"
    )
    args = parser.parse_args()
    settings = [
        ("plain", 32, args.jobs),
        ("plain_no_trigger", 32, args.jobs),
        ("pairs", 32, args.jobs),
        ("fan_in", 32, args.jobs),
        ("plain", 1, args.chain),
        ("chain", 1, args.chain),
    ]
    if args.variants:
        wanted = set(args.variants.split(",")) | {"plain"}
        settings = [s for s in settings if s[0] in wanted]
    seconds: dict[tuple[str, int], list[float]] = {}
    async with (
        isolated_schema(args.dsn, prefix="jrbench_deps") as schema,
        isolated_schema(args.dsn, prefix="jrbench_nodeps") as bare,
        PostgresJobRunner(args.dsn, schema=schema, registry=_registry(), pool_size=8) as runner,
        PostgresJobRunner(args.dsn, schema=bare, registry=_registry(), pool_size=8) as no_trig,
    ):
        async with no_trig.db.connection() as conn:
            await conn.execute(
                sql.SQL("DROP TRIGGER jobs_release_dependents ON {}").format(
                    sql.Identifier(bare, "jobs_finished")
                )
            )
        for r in (runner, no_trig):
            await _drain(r, "plain", 100, 8)  # warm-up
        for _ in range(args.rounds):
            for variant, concurrency, jobs in settings:
                target = no_trig if variant == "plain_no_trigger" else runner
                took = await _drain(target, variant, jobs, concurrency)
                seconds.setdefault((variant, concurrency), []).append(took / jobs)
            for r in (runner, no_trig):
                await r.clear_history(scope="all")
    rows = []
    for variant, concurrency, _ in settings:
        base = statistics.median(seconds[("plain", concurrency)])
        per_job = statistics.median(seconds[(variant, concurrency)])
        figure = {
            "workload": "dependencies",
            "variant": variant,
            "concurrency": concurrency,
            "jobs_per_s": round(1 / per_job, 1),
            "ratio_to_plain": round(base / per_job, 3),
            "extra_ms_per_job": round((per_job - base) * 1000, 3),
        }
        print(json.dumps(figure))
        rows.append(figure)
    print("\n| concurrency | variant | jobs/s | vs plain | extra ms per job |")
    print("|---|---|---|---|---|")
    for f in rows:
        print(
            f"| {f['concurrency']} | {f['variant']} | {f['jobs_per_s']} | "
            f"{f['ratio_to_plain']:.2f} | {f['extra_ms_per_job']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
