"""Defining recurring schedules on PostgreSQL: create-or-update, list, pause/resume, remove.

A schedule is a row of ``schedules`` plus its tracker row in ``jobs`` (status ``active``,
``job_id`` = the schedule id, ``metadata.recurring = true``). The tracker is what
``schedule_recurring_job`` returns and what ``cancel_job`` takes. Ticks are fired by
:mod:`jobrunner.backends.postgres._schedule_ticks`, from the ticker every worker runs.

Removing a schedule deletes its ``schedules`` row and marks the tracker ``cancelled`` (kept
as history, with ``metadata.schedule_removed = true``); runs already enqueued are not touched.
Every change NOTIFYs the schedules channel, so tickers look at their timers again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from jobrunner._jobargs import RecurringArgs
from jobrunner._models import JobStatus, MissedTickPolicy, OverlapPolicy, ScheduledJob, ScheduleInfo
from jobrunner._queue._ticks import iso
from jobrunner._recurrence import Recurrence, parse_recurrence
from jobrunner._validation import as_aware_datetime

if TYPE_CHECKING:
    from jobrunner._db._database import AsyncConn, Database

__all__ = [
    "cancel_schedule",
    "default_singleton_key",
    "list_schedules",
    "row_to_schedule",
    "save_schedule",
    "set_paused",
    "tracker_metadata",
]

#: ``runner_type`` of the schedules (and their runs) this module writes.
RUNNER_TYPE = "postgres"


def default_singleton_key(name: str, tenant: uuid.UUID) -> str:
    """A schedule's identity when none is given: ``<name>:<tenant>``."""
    return f"{name}:{tenant}"


def tracker_metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    """The tracker row's metadata for a ``schedules`` row (user metadata, then ours on top).

    ``last_run_status`` is left out: the database keeps it current (see migration 0002).
    """
    meta = dict(row.get("metadata") or {})
    meta.update(
        {
            "recurring": True,
            "schedule_id": str(row["schedule_id"]),
            "singleton_key": row["singleton_key"],
            "expression": row["expression"],
            "timezone": row["timezone"],
            "kind": row["kind"],
            "missed_ticks": row["missed_ticks"],
            "overlap": row["overlap"],
            "max_catch_up": row["max_catch_up"],
            "paused": bool(row["paused"]),
            "next_run_at": None if row["paused"] else iso(row["next_run_at"]),
            "last_run_at": iso(row.get("last_run_at")),
            "last_job_id": None if row.get("last_job_id") is None else str(row["last_job_id"]),
            "skipped_ticks": int(row.get("skipped_ticks") or 0),
        }
    )
    return meta


def row_to_schedule(row: Mapping[str, Any]) -> ScheduleInfo:
    """Map a ``sched_list`` row to :class:`ScheduleInfo`."""
    status = row.get("last_run_status")
    return ScheduleInfo(
        job_id=row["schedule_id"],
        tenant=row["tenant"],
        name=row["name"],
        expression=row["expression"],
        timezone=row["timezone"],
        singleton_key=row["singleton_key"],
        data=dict(row.get("data") or {}),
        paused=bool(row["paused"]),
        next_run_at=None if row["paused"] else row["next_run_at"],
        last_run_at=row.get("last_run_at"),
        last_run_status=None if status is None else JobStatus(status),
        last_job_id=row.get("last_job_id"),
        missed_ticks=MissedTickPolicy(row["missed_ticks"]),
        overlap=OverlapPolicy(row["overlap"]),
        runner_type=row["runner_type"],
    )


async def _db_now(db: Database, conn: AsyncConn) -> datetime:
    cur = await conn.execute(db.queries.sched_clock)
    found = await cur.fetchone()
    assert found is not None
    value = found["now"]
    assert isinstance(value, datetime)
    return value


async def _notify(db: Database, conn: AsyncConn, schedule_id: uuid.UUID) -> None:
    await conn.execute(
        db.queries.sched_notify, {"channel": db.channel_schedules, "payload": str(schedule_id)}
    )


async def save_schedule(
    db: Database, args: RecurringArgs, *, now: datetime | None = None
) -> ScheduledJob:
    """Create the schedule, or update the one with the same singleton key in place.

    ``args`` are validated already (``_jobargs.recurring_args``). An update keeps the
    schedule's id, tracker row, paused state and next tick, except that a changed expression
    or timezone recomputes the next tick from now.

    Args:
        db: The runner's database.
        args: The schedule's validated arguments.
        now: The current instant (tests); default: the database clock.
    """
    job, rec, tenant_id = args.job, args.recurrence, args.job.tenant
    key = job.singleton_key or default_singleton_key(job.name, tenant_id)
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "singleton_key": key,
        "name": job.name,
        "data": job.data_param,
        "user_metadata": job.metadata_param,
        "expression": rec.expression,
        "timezone": rec.timezone,
        "kind": rec.kind,
        "missed_ticks": args.missed_ticks.value,
        "overlap": args.overlap.value,
        "max_catch_up": args.max_catch_up,
        "depends_on_previous": args.depends_on_previous,
        "priority": job.priority,
        "queue": job.queue,
        "max_attempts": job.max_attempts,
        "policy": job.policy_param,
        "user_id": job.user_id,
        "runner_type": RUNNER_TYPE,
        "lock_key": f"{db.schema}:{tenant_id}:{key}",
    }
    if now is not None:
        now = as_aware_datetime(now, "now")
    q = db.queries
    async with db.transaction() as conn:
        await conn.execute(q.sched_lock_key, params)
        clock = now if now is not None else await _db_now(db, conn)
        cur = await conn.execute(q.sched_find_by_key, params)
        existing = await cur.fetchone()
        if existing is None:
            schedule_id = uuid.uuid4()
            params["schedule_id"] = schedule_id
            params["external_id"] = str(schedule_id)
            params["next_run_at"] = rec.next_after(clock)
            # The tracker first: the schedule row references it.
            params["metadata"] = Jsonb({})
            await conn.execute(q.sched_insert_tracker, params)
            cur = await conn.execute(q.sched_insert, params)
            created = True
        else:
            schedule_id = existing["schedule_id"]
            params["schedule_id"] = schedule_id
            same_timing = (
                existing["expression"] == rec.expression and existing["timezone"] == rec.timezone
            )
            params["next_run_at"] = (
                existing["next_run_at"] if same_timing else rec.next_after(clock)
            )
            cur = await conn.execute(q.sched_update, params)
            created = False
        row = await cur.fetchone()
        assert row is not None
        params["metadata"] = Jsonb(tracker_metadata(row))
        await conn.execute(q.sched_update_tracker, params)
        await _notify(db, conn, schedule_id)
    return ScheduledJob(
        job_id=schedule_id, external_id=str(schedule_id), tenant=tenant_id, created=created
    )


async def list_schedules(db: Database, tenant: uuid.UUID) -> list[ScheduleInfo]:
    """The tenant's schedules (paused ones too), by name."""
    async with db.connection() as conn:
        cur = await conn.execute(db.queries.sched_list, {"tenant": tenant})
        return [row_to_schedule(r) for r in await cur.fetchall()]


async def set_paused(
    db: Database,
    tenant: uuid.UUID,
    job_id: uuid.UUID,
    *,
    paused: bool,
    now: datetime | None = None,
) -> bool:
    """Pause or resume; ``False`` when the tenant has no such schedule.

    Resuming continues from the first tick after now: ticks that fell while paused are not
    caught up (pausing means "do not run"). Pausing or resuming twice is harmless.
    """
    q = db.queries
    async with db.transaction() as conn:
        cur = await conn.execute(q.sched_get_for_update, {"tenant": tenant, "schedule_id": job_id})
        row = await cur.fetchone()
        if row is None:
            return False
        if bool(row["paused"]) == paused:
            return True
        next_run_at = row["next_run_at"]
        if not paused:
            rec = _recurrence_of(row)
            clock = now if now is not None else await _db_now(db, conn)
            if next_run_at <= clock:
                next_run_at = rec.next_after(clock, anchor=next_run_at)
        cur = await conn.execute(
            q.sched_set_paused,
            {"tenant": tenant, "schedule_id": job_id, "paused": paused, "next_run_at": next_run_at},
        )
        updated = await cur.fetchone()
        assert updated is not None
        await conn.execute(
            q.sched_patch_tracker,
            {
                "tenant": tenant,
                "schedule_id": job_id,
                "patch": Jsonb(
                    {"paused": paused, "next_run_at": None if paused else iso(next_run_at)}
                ),
                "next_run_at": next_run_at,
            },
        )
        await _notify(db, conn, job_id)
    return True


async def cancel_schedule(
    db: Database,
    tenant: uuid.UUID,
    job_id: uuid.UUID,
    *,
    reason: str | None = None,
    cancelled_by: str | None = None,
) -> bool:
    """Remove the schedule whose tracker row is ``job_id``; ``False`` when there is none.

    The ``schedules`` row is deleted (no tick fires after the commit) and the tracker is
    marked ``cancelled``. Runs already enqueued or running are left alone.
    """
    q = db.queries
    params = {
        "tenant": tenant,
        "schedule_id": job_id,
        "reason": reason,
        "cancelled_by": cancelled_by,
    }
    async with db.transaction() as conn:
        cur = await conn.execute(q.sched_delete, params)
        if await cur.fetchone() is None:
            return False
        await conn.execute(q.sched_cancel_tracker, params)
        await _notify(db, conn, job_id)
    return True


def _recurrence_of(row: Mapping[str, Any]) -> Recurrence:
    return parse_recurrence(row["expression"], row["timezone"])
