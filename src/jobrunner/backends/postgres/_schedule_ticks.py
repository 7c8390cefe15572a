"""Firing due ticks of recurring schedules on PostgreSQL, exactly once per tick.

:func:`fire_due` locks due ``schedules`` rows with ``FOR UPDATE SKIP LOCKED``, inserts one job
per tick under the unique key ``(tenant, schedule_id, scheduled_for)`` with ``ON CONFLICT DO
NOTHING``, and moves ``next_run_at`` past ``now`` in the same transaction. A racing ticker
either skips the locked row or, once the first commits, no longer sees it as due. Which due
ticks fire is :mod:`jobrunner._queue._ticks`'s decision; the loop that calls this is
:class:`jobrunner._queue._ticker.ScheduleTicker` (through ``PostgresStore``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobrunner._db._errors import retry_conflicts
from jobrunner._db._queries import Queries, queries_for
from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._queue._store import FiredSchedule
from jobrunner._queue._ticks import DueSchedule, iso, limit_overlap, plan_due_ticks
from jobrunner._recurrence import DEFAULT_MISFIRE_GRACE

__all__ = ["fire_due", "seconds_until_next"]

logger = logging.getLogger("jobrunner.scheduler")


async def _clock(cur: psycopg.AsyncCursor[dict[str, Any]], q: Queries) -> datetime:
    await cur.execute(q.sched_clock)
    row = await cur.fetchone()
    assert row is not None
    value = row["now"]
    assert isinstance(value, datetime)
    return value


async def fire_due(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    now: datetime | None = None,
    *,
    limit: int = 100,
    grace: timedelta = DEFAULT_MISFIRE_GRACE,
) -> list[FiredSchedule]:
    """Fire every tick due at ``now`` of up to ``limit`` schedules.

    Safe to call concurrently from any number of connections and processes: each tick becomes
    exactly one job. Each schedule is fired in a transaction of its own (so a ticker never
    holds more than one schedule's rows at a time).

    Args:
        conn: An open connection not inside a transaction (autocommit).
        schema: Schema of the jobrunner tables.
        now: The current instant (inject a fake clock here); default: the database clock.
        limit: Most schedules handled by this call (call again when it returns ``limit``).
        grace: A tick later than this counts as missed (see :func:`plan_ticks`).

    Returns:
        One entry per due schedule handled (fewer than ``limit`` means none is left due).
    """
    q = queries_for(schema)
    results: list[FiredSchedule] = []

    async def fire_next() -> FiredSchedule | None:
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            when = now if now is not None else await _clock(cur, q)
            await cur.execute(q.sched_claim_due, {"now": when, "limit": 1})
            row = await cur.fetchone()
            if row is None:
                return None
            return await _fire_one(cur, q, schema, row, when, grace)

    while len(results) < limit:
        # run again when a depends_on_previous schedule's previous run moved to jobs_finished
        # while its lock was awaited (sched_lock_previous_run)
        fired = await retry_conflicts(fire_next)
        if fired is None:
            break
        results.append(fired)
    return results


def _due_schedule(row: dict[str, Any]) -> DueSchedule:
    return DueSchedule(
        schedule_id=row["schedule_id"],
        name=row["name"],
        expression=row["expression"],
        timezone=row["timezone"],
        next_run_at=row["next_run_at"],
        missed_ticks=MissedTickPolicy(row["missed_ticks"]),
        max_catch_up=row["max_catch_up"],
        overlap=OverlapPolicy(row["overlap"]),
    )


async def _fire_one(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    q: Queries,
    schema: str,
    row: dict[str, Any],
    now: datetime,
    grace: timedelta,
) -> FiredSchedule:
    key = {"tenant": row["tenant"], "schedule_id": row["schedule_id"]}
    schedule = _due_schedule(row)
    plan = plan_due_ticks(schedule, now, grace)
    fire_times, skipped = list(plan.fire_times), plan.skipped
    if fire_times and schedule.overlap is OverlapPolicy.SKIP:
        await cur.execute(q.sched_has_live_run, key)
        live = await cur.fetchone()
        fire_times, skipped = limit_overlap(
            fire_times, skipped, live=live is not None and bool(live["live"])
        )
    inserted: list[tuple[uuid.UUID, datetime]] = []
    runs: list[dict[str, Any]] = []
    previous_live = None
    if fire_times and row.get("depends_on_previous") and row["last_job_id"] is not None:
        # locked before the runs are written: see sched_lock_previous_run
        await cur.execute(q.sched_lock_previous_run, {**key, "job_id": row["last_job_id"]})
        found = await cur.fetchone()
        previous_live = found["job_id"] if found is not None and found["live"] else None
    if fire_times:
        await cur.execute(
            q.sched_insert_runs,
            {
                **key,
                "job_ids": [uuid.uuid4() for _ in fire_times],
                "fire_times": fire_times,
                "fire_isos": [iso(t) for t in fire_times],
                "channel": f"{schema}_jobs",
            },
        )
        runs = await cur.fetchall()
        inserted = [(r["job_id"], r["scheduled_for"]) for r in runs]
        if runs and row.get("depends_on_previous"):
            await cur.execute(
                q.sched_chain_runs,
                {**key, "job_ids": [r["job_id"] for r in runs], "previous": previous_live},
            )
            if len(runs) > 1 or previous_live is not None:
                runs[-1]["status"] = "waiting"
        # A tick that already had its job (only possible if next_run_at was moved back by
        # hand) is not fired twice: the unique key turned the insert into a no-op.
        skipped += len(fire_times) - len(inserted)
    last_job_id, last_run_at = inserted[-1] if inserted else (None, None)
    await cur.execute(
        q.sched_advance,
        {
            **key,
            "next_run_at": plan.next_run_at,
            "last_run_at": last_run_at,
            "last_job_id": last_job_id,
            "skipped": skipped,
        },
    )
    advanced = await cur.fetchone()
    patch: dict[str, Any] = {"next_run_at": iso(plan.next_run_at)}
    if advanced is not None:
        patch["skipped_ticks"] = int(advanced["skipped_ticks"])
    if inserted:
        patch.update(
            last_run_at=iso(last_run_at),
            last_job_id=str(last_job_id),
            last_run_status=runs[-1]["status"],
        )
    await cur.execute(
        q.sched_patch_tracker, {**key, "patch": Jsonb(patch), "next_run_at": plan.next_run_at}
    )
    if inserted:
        logger.info(
            "schedule %s (%s) fired %d job(s) for %s",
            row["schedule_id"],
            row["name"],
            len(inserted),
            ", ".join(iso(t) or "" for _, t in inserted),
        )
    return FiredSchedule(row["tenant"], row["schedule_id"], inserted, skipped, plan.next_run_at)


async def seconds_until_next(
    conn: psycopg.AsyncConnection[Any], schema: str, now: datetime | None = None
) -> float | None:
    """Seconds from ``now`` (default: the database clock) to the earliest unpaused tick.

    ``None`` when there is no active schedule; ``0`` or less when one is due.
    """
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(queries_for(schema).sched_next_due)
    row = await cur.fetchone()
    if row is None or row["next_run_at"] is None:
        return None
    reference = now if now is not None else row["db_now"]
    delta: timedelta = row["next_run_at"] - reference
    return delta.total_seconds()
