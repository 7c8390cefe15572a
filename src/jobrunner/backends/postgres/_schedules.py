"""Recurring schedules on PostgreSQL: create-or-update, list, pause/resume, cancel.

A schedule is a row of ``schedules`` plus its tracker row in ``jobs`` (status ``active``,
``job_id`` = the schedule id, ``metadata.recurring = true``). The tracker is what
``schedule_recurring_job`` returns and what ``cancel_job`` takes. Ticks are fired by
:mod:`jobrunner.backends.postgres._scheduler`, which every worker runs.

Cancelling a schedule deletes its ``schedules`` row and marks the tracker ``cancelled`` (kept
as history, with ``metadata.schedule_removed = true``); runs already enqueued are not touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from jobrunner._jobargs import recurring_args
from jobrunner._models import JobStatus, MissedTickPolicy, OverlapPolicy, ScheduledJob, ScheduleInfo
from jobrunner._recurrence import Recurrence, parse_recurrence
from jobrunner._validation import as_aware_datetime

if TYPE_CHECKING:
    from jobrunner._db._database import AsyncConn
    from jobrunner.backends.postgres._runner import PostgresJobRunner

__all__ = [
    "cancel_schedule",
    "default_singleton_key",
    "list_schedules",
    "row_to_schedule",
    "schedules_channel",
    "set_paused",
    "tracker_metadata",
    "upsert_schedule",
]


def schedules_channel(schema: str) -> str:
    """NOTIFY channel telling schedulers that a schedule changed (payload: schedule id)."""
    return f"{schema}_schedules"


def default_singleton_key(name: str, tenant: uuid.UUID) -> str:
    """A schedule's identity when none is given: ``<name>:<tenant>``."""
    return f"{name}:{tenant}"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC for JSON metadata (``None`` stays ``None``)."""
    return None if value is None else value.astimezone(UTC).isoformat()


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


async def _db_now(conn: AsyncConn) -> datetime:
    cur = await conn.execute("SELECT clock_timestamp() AS now")
    found = await cur.fetchone()
    assert found is not None
    value = found["now"]
    assert isinstance(value, datetime)
    return value


async def _notify(runner: PostgresJobRunner, conn: AsyncConn, schedule_id: uuid.UUID) -> None:
    await conn.execute(
        runner.db.queries.sched_notify,
        {"channel": schedules_channel(runner.schema), "payload": str(schedule_id)},
    )


async def upsert_schedule(
    runner: PostgresJobRunner,
    name: str,
    data: Mapping[str, Any] | None,
    expression: str,
    *,
    tenant: Any = None,
    timezone: str = "UTC",
    singleton_key: str | None = None,
    missed_ticks: MissedTickPolicy | str = MissedTickPolicy.LATEST,
    overlap: OverlapPolicy | str = OverlapPolicy.ALLOW,
    max_catch_up: int = 10,
    priority: int = 0,
    queue: str | None = None,
    user_id: uuid.UUID | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> ScheduledJob:
    """Create the schedule, or update the one with the same singleton key in place.

    Every argument is validated before anything is written. An update keeps the schedule's
    id, tracker row, paused state and next tick, except that a changed expression or timezone
    recomputes the next tick from now.

    Args:
        now: The current instant (tests); default: the database clock.

    Raises:
        ScheduleError: bad expression, timezone or policy; nothing written.
        HandlerNotFoundError: ``name`` has no handler (unless ``require_registered=False``).
        InvalidArgumentError: any other malformed argument.
    """
    args = recurring_args(
        runner.registry,
        runner.require_registered,
        name,
        data,
        expression,
        tenant=tenant,
        timezone=timezone,
        singleton_key=singleton_key,
        missed_ticks=missed_ticks,
        overlap=overlap,
        max_catch_up=max_catch_up,
        priority=priority,
        queue=queue,
        user_id=user_id,
        metadata=metadata,
    )
    job, rec, tenant_id = args.job, args.recurrence, args.job.tenant
    key = job.singleton_key or default_singleton_key(job.name, tenant_id)
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "singleton_key": key,
        "name": job.name,
        "data": Jsonb(job.data),
        "user_metadata": Jsonb(job.metadata),
        "expression": rec.expression,
        "timezone": rec.timezone,
        "kind": rec.kind,
        "missed_ticks": args.missed_ticks.value,
        "overlap": args.overlap.value,
        "max_catch_up": args.max_catch_up,
        "priority": job.priority,
        "queue": job.queue,
        "max_attempts": job.max_attempts,
        "policy": job.policy_param,
        "user_id": job.user_id,
        "runner_type": runner.runner_type,
        "lock_key": f"{runner.schema}:{tenant_id}:{key}",
    }
    if now is not None:
        now = as_aware_datetime(now, "now")
    q = runner.db.queries
    async with runner.db.transaction() as conn:
        await conn.execute(q.sched_lock_key, params)
        clock = now if now is not None else await _db_now(conn)
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
        await _notify(runner, conn, schedule_id)
    return ScheduledJob(
        job_id=schedule_id, external_id=str(schedule_id), tenant=tenant_id, created=created
    )


async def list_schedules(runner: PostgresJobRunner, tenant: uuid.UUID) -> list[ScheduleInfo]:
    """The tenant's schedules (paused ones too), by name."""
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.sched_list, {"tenant": tenant})
        return [row_to_schedule(r) for r in await cur.fetchall()]


async def set_paused(
    runner: PostgresJobRunner,
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
    q = runner.db.queries
    async with runner.db.transaction() as conn:
        cur = await conn.execute(q.sched_get_for_update, {"tenant": tenant, "schedule_id": job_id})
        row = await cur.fetchone()
        if row is None:
            return False
        if bool(row["paused"]) == paused:
            return True
        next_run_at = row["next_run_at"]
        if not paused:
            rec = _recurrence_of(row)
            clock = now if now is not None else await _db_now(conn)
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
        await _notify(runner, conn, job_id)
    return True


async def cancel_schedule(
    runner: PostgresJobRunner,
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
    q = runner.db.queries
    params = {
        "tenant": tenant,
        "schedule_id": job_id,
        "reason": reason,
        "cancelled_by": cancelled_by,
    }
    async with runner.db.transaction() as conn:
        cur = await conn.execute(q.sched_delete, params)
        if await cur.fetchone() is None:
            return False
        await conn.execute(q.sched_cancel_tracker, params)
        await _notify(runner, conn, job_id)
    return True


def _recurrence_of(row: Mapping[str, Any]) -> Recurrence:
    return parse_recurrence(row["expression"], row["timezone"])


async def fetch_schedule_row(
    runner: PostgresJobRunner, tenant: uuid.UUID, job_id: uuid.UUID
) -> dict[str, Any] | None:
    """The raw ``schedules`` row (tests and diagnostics)."""
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.sched_get, {"tenant": tenant, "schedule_id": job_id}
        )
        return await cur.fetchone()
