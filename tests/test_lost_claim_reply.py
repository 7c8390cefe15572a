"""A claim whose reply never reached the worker (the connection died after the commit) must
not leave the job "processing" for as long as the worker lives: the worker's heartbeat would
renew a lease nobody works on. The worker releases such rows after two heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from jobrunner import JobHandlerRegistry, JobStatus
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker


async def test_rows_claimed_but_not_running_are_released(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    async def work(ctx: Any, data: dict[str, Any]) -> int:
        return ctx.attempt

    registry.add("orphan.work", work)
    async with running_worker(runner, lease_seconds=1.5) as worker:
        later = datetime.now(UTC) + timedelta(hours=1)
        job = await runner.schedule_job_at("orphan.work", {}, later)
        # What a claim does, but the worker never hears of it.
        async with await psycopg.AsyncConnection.connect(jobrunner_dsn, autocommit=True) as conn:
            cur = await conn.execute(
                sql.SQL(
                    "UPDATE {}.jobs SET status = 'processing', attempts = attempts + 1, "
                    "lease_token = lease_token + 1, worker_id = %s, run_at = now(), "
                    "lease_expires_at = now() + interval '1.5 seconds', started_at = now() "
                    "WHERE job_id = %s"
                ).format(sql.Identifier(schema)),
                (worker.worker_id, job.job_id),  # type: ignore[attr-defined]
            )
            assert cur.rowcount == 1
        info = await runner.wait_for_job(job.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED
    assert info.result == 1  # the lost claim was released, not counted as an attempt
    details = await runner.get_job_details(job.job_id)
    assert details is not None
    assert not any((s.metadata or {}).get("lease_expired") for s in details.steps)
