"""The cost of a durable step (``ctx.run_step``) next to the plain drain, on PostgreSQL.

Four handlers drain the same number of jobs through one in-process worker: ``plain`` (returns
at once), ``history`` (one ``ctx.step`` block), ``durable1`` (one ``ctx.run_step``) and
``durable3`` (three). Rounds interleave the variants (the machine is shared: compare the
ratios within one run, not absolute times). Two settings: concurrency 1 (the latency a step
adds to one job) and concurrency 32 (throughput).

    python bench/durable_steps_bench.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

Prints one JSON line per variant and setting, then a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from jobrunner import JobContext, JobHandlerRegistry
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import isolated_schema, running_worker

VARIANTS = ("plain", "history", "durable1", "durable3")


async def _value(n: int) -> dict[str, int]:
    return {"n": n}


def _registry() -> JobHandlerRegistry:
    registry = JobHandlerRegistry()

    async def plain(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    async def history(ctx: JobContext, data: dict[str, Any]) -> None:
        async with ctx.step("one") as step:
            step.result = {"n": 1}

    async def durable1(ctx: JobContext, data: dict[str, Any]) -> None:
        await ctx.run_step("one", _value, 1)

    async def durable3(ctx: JobContext, data: dict[str, Any]) -> None:
        for n in range(3):
            await ctx.run_step(f"step-{n}", _value, n)

    for name, handler in zip(VARIANTS, (plain, history, durable1, durable3), strict=True):
        registry.add(name, handler)
    return registry


async def _drain(runner: PostgresJobRunner, name: str, jobs: int, concurrency: int) -> float:
    handles = await runner.schedule_jobs(name, [{} for _ in range(jobs)])
    started = time.perf_counter()
    async with running_worker(runner, concurrency=concurrency, poll_interval=0.05):
        for handle in handles:
            await runner.wait_for_job(handle.job_id, timeout=300)
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
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per drain at concurrency 32")
    parser.add_argument("--serial-jobs", type=int, default=300, help="jobs at concurrency 1")
    args = parser.parse_args()
    settings = [(1, args.serial_jobs), (32, args.jobs)]
    seconds: dict[tuple[int, str], list[float]] = {}
    async with (
        isolated_schema(args.dsn, prefix="jrbench_steps") as schema,
        PostgresJobRunner(args.dsn, schema=schema, registry=_registry(), pool_size=8) as runner,
    ):
        await _drain(runner, "plain", 50, 8)  # warm-up
        for _ in range(args.rounds):
            for concurrency, jobs in settings:
                for name in VARIANTS:
                    took = await _drain(runner, name, jobs, concurrency)
                    seconds.setdefault((concurrency, name), []).append(took / jobs)
            await runner.clear_history(scope="all")
    rows = []
    for concurrency, _ in settings:
        plain = statistics.median(seconds[(concurrency, "plain")])
        for name in VARIANTS:
            per_job = statistics.median(seconds[(concurrency, name)])
            steps = {"plain": 0, "history": 1, "durable1": 1, "durable3": 3}[name]
            extra_ms = (per_job - plain) * 1000
            figure = {
                "workload": "durable_steps",
                "variant": name,
                "concurrency": concurrency,
                "jobs_per_s": round(1 / per_job, 1),
                "ratio_to_plain": round(plain / per_job, 3),
                "extra_ms_per_step": round(extra_ms / steps, 3) if steps else 0.0,
            }
            print(json.dumps(figure))
            rows.append(figure)
    print("\n| concurrency | variant | jobs/s | vs plain | extra ms per step |")
    print("|---|---|---|---|---|")
    for f in rows:
        print(
            f"| {f['concurrency']} | {f['variant']} | {f['jobs_per_s']} | "
            f"{f['ratio_to_plain']:.2f} | {f['extra_ms_per_step']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
