"""The re-queue bound of a dead worker's job: ``lease + rescue interval``, at most 30 s with
the defaults (issue #2), checked against the database clock."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from typing import Any

from apps.helpers import details, fetch, job_row
from jobrunner import JobHandlerRegistry, JobStatus
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._worker import WorkerSettings
from jobrunner.testing import running_worker


def test_default_requeue_bound_is_at_most_30_seconds() -> None:
    settings = WorkerSettings()
    assert settings.requeue_bound == settings.lease_seconds + settings.rescue_every
    assert settings.requeue_bound <= 30.0
    assert settings.heartbeat_every < settings.lease_seconds
    short = WorkerSettings.build(lease_seconds=1.2, rescue_interval=0.3)
    assert short.requeue_bound == 1.5


async def test_dead_workers_job_is_rescued_within_the_bound(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    settings = WorkerSettings.build(lease_seconds=1.0, rescue_interval=0.25)

    async def handler(ctx: Any, data: dict[str, Any]) -> int:
        return ctx.attempt  # type: ignore[no-any-return]

    registry.add("orphaned", handler)
    handle = await runner.schedule_job("orphaned", {})
    # A worker claims the job and dies at once: it never heartbeats.
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.claim_jobs,
            {
                "queues": ["default"],
                "limit": 1,
                "worker_id": uuid.uuid4(),
                "lease_seconds": settings.lease_seconds,
                # FlowGate's: fair, the flow_state version of a fresh schema (0011), no state
                "fair": True,
                "version": 1,
                "vclock": 0.0,
                "pass_tenants": [],
                "pass_values": [],
            },
        )
        assert len(await cur.fetchall()) == 1
    (claim,) = await fetch(
        runner,
        "SELECT lease_expires_at - make_interval(secs => %s) AS claimed_at "
        "FROM {schema}.jobs WHERE job_id = %s",
        settings.lease_seconds,
        handle.job_id,
    )
    async with running_worker(
        runner, lease_seconds=settings.lease_seconds, rescue_interval=settings.rescue_interval
    ):
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED and info.result == 2 and info.attempts == 2
    (rescue,) = [
        r
        for r in await details(runner, handle.job_id, "attempt")
        if r["metadata"].get("lease_expired")
    ]
    # processed_at is UTC without a time zone; claimed_at is timestamptz
    rescued_at = rescue["processed_at"].replace(tzinfo=UTC)
    claimed_at = claim["claimed_at"]
    elapsed = (rescued_at - claimed_at).total_seconds()
    assert elapsed >= settings.lease_seconds  # never before the lease expired
    # by the computed bound (one rescue interval of scheduling slack for a loaded machine)
    assert rescued_at <= claimed_at + timedelta(
        seconds=settings.requeue_bound + settings.rescue_every
    ), elapsed
    assert (await job_row(runner, handle.job_id))["status"] == "completed"
