"""Run the demo: a worker on a private PostgreSQL executes the example app's jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from jobrunner import JobInfo
from jobrunner._embedded import EmbeddedPostgres
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.demo import app
from jobrunner.testing import running_worker

TENANT = "6f1c2a9e-0b7d-4a57-9c1e-2d4b8f3a9e10"


@contextlib.contextmanager
def database() -> Iterator[str]:
    configured = os.environ.get("JOBRUNNER_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        print(f"using the configured database {configured.split('@')[-1]}")
        yield configured
        return
    started = time.monotonic()
    with EmbeddedPostgres() as pg:
        print(f"started a private PostgreSQL in {time.monotonic() - started:.1f} s: {pg.dsn}")
        yield pg.dsn


def describe(label: str, info: JobInfo) -> str:
    took = ""
    if info.started_at and info.completed_at:
        took = f" in {(info.completed_at - info.started_at).total_seconds() * 1000:.0f} ms"
    error = f"  error: {info.error.type}: {info.error.message}" if info.error else ""
    result = f"  result: {info.result}" if info.result is not None else ""
    return (
        f"  {label:<28} {info.status.value:<10} attempts={info.attempts}/{info.max_attempts}"
        f" progress={info.progress}%{took}{result}{error}"
    )


async def main() -> int:
    with database() as dsn:
        runner = PostgresJobRunner(dsn, schema="jobrunner_demo")
        async with runner:
            print("migrations applied; registered handlers:", ", ".join(runner.registry.names()))
            async with running_worker(runner, concurrency=4):
                print("worker consuming; scheduling jobs for tenant", TENANT)
                invoice = await runner.schedule_job(
                    "generate-invoice", {"cycle": "2026-11", "hours": 12}, tenant=TENANT
                )
                due = datetime.now(UTC) + timedelta(seconds=2)
                reminder = await runner.schedule_job_at(
                    "send-reminder", {"user": "u-789"}, due, tenant=TENANT
                )
                flaky = await runner.schedule_job("sync-crm", {"account": "acme"}, tenant=TENANT)
                slow = await runner.schedule_job("slow-report", {}, tenant=TENANT)
                await asyncio.wait_for(app.SLOW_REPORT_STARTED.wait(), 30)
                cancelled = await runner.cancel_job(
                    slow.job_id, tenant=TENANT, reason="demo", cancelled_by="demo"
                )
                print(f"cancel requested for the running slow-report: {cancelled}")
                results = {}
                for label, handle in [
                    ("immediate (generate-invoice)", invoice),
                    ("delayed 2 s (send-reminder)", reminder),
                    ("retried (sync-crm)", flaky),
                    ("cancelled (slow-report)", slow),
                ]:
                    results[label] = await runner.wait_for_job(
                        handle.job_id, tenant=TENANT, timeout=60
                    )
                lag = (results["delayed 2 s (send-reminder)"].started_at or due) - due
                print("\nwhat happened:")
                for label, info in results.items():
                    print(describe(label, info))
                print(
                    f"\n  the delayed job started {lag.total_seconds() * 1000:.0f} ms after "
                    "its due time"
                )
                details = await runner.get_job_details(flaky.job_id, tenant=TENANT)
                assert details is not None
                print("  sync-crm history (job_details):")
                for step in details.steps:
                    print(
                        f"    {step.step_name:<10} {step.status.value:<10} "
                        f"attempt={step.retry_count}"
                    )
            ok = [r.status.value for r in results.values()] == [
                "completed",
                "completed",
                "completed",
                "cancelled",
            ]
    print("\ndemo finished:", "all jobs behaved as expected" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
