"""The upgrade path: a database created by the previous release (migrations 0001-0006, commit
86ef4c1), holding jobs in every state, step history and an active and a paused schedule, is
migrated in place by ``jobrunner migrate`` with nothing lost, and everything in it then runs.

tests/data/release-0006.sql is a ``pg_dump --inserts`` of such a database, made by running that
release's own code (a job per state: completed, failed, retrying, cancelled, queued, pending,
processing under a dead worker's expired lease; two tenants; a singleton and a priority)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from apps.helpers import eventually
from jobrunner import JobContext, JobHandlerRegistry, JobStatus
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

DUMP = Path(__file__).resolve().parent / "data" / "release-0006.sql"
DUMP_SCHEMA = "jr_release_fixture"
T1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
T2 = uuid.UUID("22222222-2222-2222-2222-222222222222")
JOB_COLUMNS = (
    "tenant, job_id, type, status::text AS status, attempts, max_attempts, data, result, error, "
    "metadata, progress, queue, priority, singleton_key, schedule_id, run_at, created_at"
)


@pytest.fixture
def released_schema(jobrunner_dsn: str) -> Any:
    schema = f"jrupg_{uuid.uuid4().hex[:10]}"
    script = DUMP.read_text().replace(DUMP_SCHEMA, schema)
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[call-overload]  # a dump: no parameters
    yield schema
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[call-overload]


def _snapshot(dsn: str, schema: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.execute(f'SET search_path TO "{schema}"')  # type: ignore[call-overload]
        return {
            "jobs": conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY job_id"  # type: ignore[call-overload]
            ).fetchall(),
            "details": conn.execute(
                "SELECT detail_id, job_id, step_name, status::text AS status, result, retry_count "
                "FROM job_details ORDER BY detail_id"
            ).fetchall(),
            "schedules": conn.execute(
                "SELECT schedule_id, tenant, name, expression, next_run_at, paused "
                "FROM schedules ORDER BY schedule_id"
            ).fetchall(),
            "migrations": conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            ).fetchall(),
        }


def _migrate(dsn: str, schema: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    env["JOBRUNNER_DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "migrate", "--schema", schema],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_previous_release_is_migrated_in_place_and_runs(
    jobrunner_dsn: str, released_schema: str
) -> None:
    before = _snapshot(jobrunner_dsn, released_schema)
    statuses = sorted(r["status"] for r in before["jobs"])
    assert statuses == sorted(
        ["completed"] * 3
        + ["failed", "retrying", "cancelled", "queued", "queued", "pending", "processing"]
        + ["active", "active"]
    )
    assert [m["version"] for m in before["migrations"]] == [1, 2, 3, 4, 6]

    done = _migrate(jobrunner_dsn, released_schema)
    assert done.returncode == 0, done.stderr
    after = _snapshot(jobrunner_dsn, released_schema)
    # Nothing lost or changed: every job, step row and schedule as the old release left it.
    assert after["jobs"] == before["jobs"]
    assert after["details"] == before["details"]
    assert after["schedules"] == before["schedules"]
    assert [m["version"] for m in after["migrations"]][:5] == [1, 2, 3, 4, 6]
    assert len(after["migrations"]) > len(before["migrations"])
    assert _migrate(jobrunner_dsn, released_schema).returncode == 0  # idempotent
    # 0009: every row sits in the partition of its status, and every tick that had a job is
    # recorded in schedule_ticks (so it never fires again).
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(released_schema)))
        placed = conn.execute(
            "SELECT tableoid::regclass::text AS part, status::text FROM jobs"
        ).fetchall()
        ticks = conn.execute(
            "SELECT count(*) FROM jobs WHERE schedule_id IS NOT NULL AND scheduled_for IS NOT "
            "NULL AND (tenant, schedule_id, scheduled_for) NOT IN "
            "(SELECT tenant, schedule_id, scheduled_for FROM schedule_ticks)"
        ).fetchone()
    finished = {"completed", "failed", "cancelled"}
    assert placed and all(
        part.endswith("jobs_finished") == (status in finished) for part, status in placed
    ), placed
    assert ticks == (0,)

    # The migrated database works: every live job runs under the new code.
    registry = JobHandlerRegistry()
    ran: list[tuple[str, int]] = []

    async def ok(ctx: JobContext, data: dict[str, Any]) -> Any:
        ran.append((ctx.name, ctx.attempt))
        return {"ok": data.get("n")}

    for name in ("fx-ok", "fx-retry", "fx-block"):
        registry.add(name, ok)
    runner = PostgresJobRunner(
        jobrunner_dsn, schema=released_schema, registry=registry, auto_migrate="check"
    )
    await runner.start()
    try:
        async with runner.db.connection() as conn:
            # Time passes: the retry, the far-future job and the active schedule's tick are due.
            await conn.execute(
                "UPDATE {}.jobs SET run_at = now() - interval '1 second' "
                "WHERE status IN ('retrying', 'pending')".format(f'"{released_schema}"')
            )
            await conn.execute(
                "UPDATE {}.schedules SET next_run_at = now() - interval '1 second' "
                "WHERE NOT paused".format(f'"{released_schema}"')
            )
        live = [
            r
            for r in before["jobs"]
            if r["status"] not in {"completed", "failed", "cancelled", "active"}
        ]
        async with running_worker(runner, lease_seconds=2):
            for row in live:
                info = await runner.wait_for_job(row["job_id"], tenant=row["tenant"], timeout=60)
                assert info.status is JobStatus.COMPLETED, (row, info)
            active = [r for r in before["schedules"] if not r["paused"]]
            [schedule] = active

            async def fired() -> int:
                page = await runner.list_jobs(tenant=schedule["tenant"], limit=100)
                return sum(1 for j in page.jobs if j.schedule_id == schedule["schedule_id"])

            await eventually(fired, lambda n: n >= 1, what="the active schedule firing")
        # The job a dead worker held was rescued (its lost attempt counted) and ran again.
        [held] = [r for r in before["jobs"] if r["status"] == "processing"]
        info = await runner.get_job_status(held["job_id"], tenant=held["tenant"])
        assert info is not None and info.attempts == 2
        # Final jobs stayed final; the paused schedule did not fire.
        for row in before["jobs"]:
            if row["status"] in {"completed", "failed", "cancelled"}:
                info = await runner.get_job_status(row["job_id"], tenant=row["tenant"])
                assert info is not None and info.status.value == row["status"]
    finally:
        await runner.close()
