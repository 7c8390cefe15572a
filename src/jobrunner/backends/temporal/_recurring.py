"""Recurring jobs on Temporal: one Temporal Schedule per jobrunner schedule.

Each schedule also has a tracker row in the shared ``jobs`` table (``status = 'active'``,
``external_id`` = the Temporal schedule id, the schedule's settings in its metadata): what
``schedule_recurring_job`` returns, what ``cancel_job`` takes and what monitoring lists.
Translating a recurrence into a Temporal schedule spec is :mod:`._schedules`' job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from temporalio.client import (
    Client,
    ScheduleAlreadyRunningError,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from jobrunner._db._database import Database
from jobrunner._errors import ScheduleError, UnavailableError
from jobrunner._jobargs import RecurringArgs
from jobrunner._models import (
    JobStatus,
    MissedTickPolicy,
    OverlapPolicy,
    ScheduledJob,
    ScheduleInfo,
)
from jobrunner.backends.temporal import _schedules
from jobrunner.backends.temporal._inputs import policy_input, workflow_id
from jobrunner.backends.temporal._types import JobInput

__all__ = ["TemporalSchedules"]

logger = logging.getLogger("jobrunner.temporal")


class TemporalSchedules:
    """The recurring schedules of one Temporal runner (its client, task queue and tables).

    Arguments are validated by the runner; every method here expects a started runner.

    Args:
        client: Returns the runner's connected Temporal client.
        db: The database of the tracker rows.
        task_queue: Task queue of the workflows the schedules start.
        heartbeat_timeout: Seconds without a heartbeat before an attempt is retried.
        runner_type: Stored with the trackers (``"temporal"``).
    """

    def __init__(
        self,
        client: Callable[[], Client],
        db: Database,
        *,
        task_queue: str,
        heartbeat_timeout: float,
        runner_type: str,
    ) -> None:
        self._client = client
        self.db = db
        self.task_queue = task_queue
        self.heartbeat_timeout = heartbeat_timeout
        self.runner_type = runner_type

    async def save(self, args: RecurringArgs) -> ScheduledJob:
        """Create or update (in place, data included) the Temporal Schedule of ``args``.

        The schedule id is ``singleton_key`` or ``recurring-<name>-<tenant>``; Temporal
        schedule ids are unique per namespace, so a key another tenant uses is refused.

        Raises:
            ScheduleError: another tenant's schedule has this id.
            UnavailableError: Temporal refused to create or update the schedule.
        """
        req, tenant_id = args.job, args.job.tenant
        schedule_id = _schedules.schedule_id_for(req.name, tenant_id, req.singleton_key)
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.db.queries.temporal_find_tracker, {"schedule_id": schedule_id}
            )
            existing = await cur.fetchone()
        if existing is not None and existing["tenant"] != tenant_id:
            raise ScheduleError(
                f"schedule id {schedule_id!r} is already used in this Temporal namespace; "
                "choose another singleton_key"
            )
        tracker_id = existing["job_id"] if existing is not None else uuid.uuid4()
        paused = False
        offset: timedelta | None = None
        if existing is not None:
            tracker = await self.tracker(tenant_id, tracker_id)
            old_meta = dict(tracker["metadata"] or {}) if tracker else {}
            paused = bool(old_meta.get("paused"))
            kept = old_meta.get("interval_offset_seconds")
            if old_meta.get("expression") == args.recurrence.expression and isinstance(kept, int):
                # Same interval: keep its grid (as PostgreSQL keeps next_run_at).
                offset = timedelta(seconds=kept)
        if args.recurrence.interval is not None and offset is None:
            offset = _schedules.interval_offset_for(args.recurrence.interval, datetime.now(UTC))
        row_meta = _schedules.describe_metadata(
            recurrence=args.recurrence,
            timezone=args.recurrence.timezone,
            missed_ticks=args.missed_ticks,
            overlap=args.overlap,
            max_catch_up=args.max_catch_up,
            extra=req.metadata,
            paused=paused,
            tracker_id=tracker_id,
            schedule_id=schedule_id,
            singleton_key=req.singleton_key or schedule_id,
            interval_offset=offset,
        )
        # read by register_run: each run waits for the schedule's previous run (0012)
        row_meta["depends_on_previous"] = args.depends_on_previous
        job = JobInput(
            job_id=None,
            tenant=str(tenant_id),
            name=req.name,
            data=req.data,
            policy=policy_input(req.spec) if req.spec is not None else None,
            heartbeat_timeout=self.heartbeat_timeout,
            schedule_id=str(tracker_id),
            queue=req.queue,
            priority=req.priority,
            user_id=str(req.user_id),
            metadata=req.metadata,
        )
        schedule = _schedules.build_schedule(
            recurrence=args.recurrence,
            timezone=args.recurrence.timezone,
            job=job,
            workflow_id=workflow_id(req.name, schedule_id),
            task_queue=self.task_queue,
            missed_ticks=args.missed_ticks,
            overlap=args.overlap,
            max_catch_up=args.max_catch_up,
            paused=paused,
            interval_offset=offset,
        )
        params = {
            "tenant": tenant_id,
            "job_id": tracker_id,
            "name": req.name,
            "metadata": Jsonb(row_meta),
            "user_id": req.user_id,
            "schedule_id": schedule_id,
            "queue": req.queue,
            "priority": req.priority,
            "data": Jsonb(req.data),
            "max_attempts": req.max_attempts,
            "singleton_key": req.singleton_key or schedule_id,
        }
        if existing is None:
            async with self.db.connection() as conn:
                cur = await conn.execute(self.db.queries.temporal_insert_tracker, params)
                inserted = await cur.fetchone()
            if inserted is None:
                # Another call created the tracker first: update that one instead.
                return await self.save(args)
            try:
                await self._client().create_schedule(
                    schedule_id,
                    schedule,
                    memo={
                        "tenant": str(tenant_id),
                        "tracker_job_id": str(tracker_id),
                        "name": req.name,
                    },
                )
            except Exception as exc:
                if _already_exists(exc):
                    await self._update_schedule(schedule_id, schedule)
                else:
                    async with self.db.connection() as conn:
                        await conn.execute(
                            self.db.queries.temporal_cancel_tracker,
                            {
                                "tenant": tenant_id,
                                "job_id": tracker_id,
                                "reason": f"schedule creation failed: {exc}"[:500],
                                "cancelled_by": "jobrunner",
                            },
                        )
                    raise UnavailableError(
                        f"could not create Temporal schedule {schedule_id}: {exc}"
                    ) from exc
            await self._refresh_next_run(tenant_id, tracker_id, schedule_id)
            return ScheduledJob(job_id=tracker_id, external_id=schedule_id, tenant=tenant_id)
        await self._update_schedule(schedule_id, schedule)
        async with self.db.connection() as conn:
            await conn.execute(self.db.queries.temporal_update_tracker, params)
        await self._refresh_next_run(tenant_id, tracker_id, schedule_id)
        return ScheduledJob(
            job_id=tracker_id, external_id=schedule_id, tenant=tenant_id, created=False
        )

    async def _update_schedule(self, schedule_id: str, schedule: Any) -> None:
        async def updater(current: ScheduleUpdateInput) -> ScheduleUpdate:
            # Keep the paused state Temporal has (pause/resume may have changed it).
            schedule.state = current.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        handle = self._client().get_schedule_handle(schedule_id)
        try:
            await handle.update(updater)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                # Deleted behind our back (for example in the Temporal UI): recreate it.
                await self._client().create_schedule(schedule_id, schedule)
                return
            raise UnavailableError(
                f"could not update Temporal schedule {schedule_id}: {exc}"
            ) from exc

    async def _next_action(self, schedule_id: str) -> datetime | None:
        """The Temporal Schedule's next action time (``None`` when paused or unknown)."""
        try:
            desc = await self._client().get_schedule_handle(schedule_id).describe()
        except RPCError as exc:
            logger.warning("could not describe Temporal schedule %s: %s", schedule_id, exc)
            return None
        times = desc.info.next_action_times
        return None if desc.schedule.state.paused or not times else times[0]

    async def _refresh_next_run(
        self, tenant: uuid.UUID, tracker_id: uuid.UUID, schedule_id: str
    ) -> None:
        next_run = await self._next_action(schedule_id)
        async with self.db.connection() as conn:
            await conn.execute(
                self.db.queries.temporal_patch_tracker,
                {
                    "tenant": tenant,
                    "job_id": tracker_id,
                    "patch": Jsonb({"next_run_at": _schedules.iso(next_run)}),
                    "skipped": 0,
                    "next_run_at": next_run,
                },
            )

    async def tracker(self, tenant: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        """The tracker row ``job_id`` of the tenant, if it is a live schedule's."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.db.queries.temporal_get_tracker, {"tenant": tenant, "job_id": job_id}
            )
            return await cur.fetchone()

    async def remove(
        self,
        tenant: uuid.UUID,
        job_id: uuid.UUID,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Delete the schedule whose tracker row is ``job_id`` (the tracker is kept,
        cancelled); ``False`` when the tenant has no such schedule."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.db.queries.temporal_cancel_tracker,
                {
                    "tenant": tenant,
                    "job_id": job_id,
                    "reason": reason,
                    "cancelled_by": cancelled_by,
                },
            )
            row = await cur.fetchone()
        if row is None:
            return False
        try:
            await self._client().get_schedule_handle(row["external_id"]).delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise UnavailableError(
                    f"could not delete Temporal schedule {row['external_id']}: {exc}"
                ) from exc
        return True

    async def list(self, tenant: uuid.UUID) -> list[ScheduleInfo]:
        """The tenant's schedules, with next run from Temporal and last run from the table."""
        async with self.db.connection() as conn:
            cur = await conn.execute(self.db.queries.temporal_list_trackers, {"tenant": tenant})
            trackers = await cur.fetchall()
            cur = await conn.execute(
                self.db.queries.temporal_last_runs,
                {"tenant": tenant, "schedule_ids": [t["job_id"] for t in trackers]},
            )
            last = {r["schedule_id"]: r for r in await cur.fetchall()}

        async def describe(t: dict[str, Any]) -> ScheduleInfo:
            meta = dict(t["metadata"] or {})
            paused = bool(meta.get("paused"))
            next_run: datetime | None = None
            try:
                desc = await self._client().get_schedule_handle(t["external_id"]).describe()
                paused = desc.schedule.state.paused
                # Temporal still computes action times for a paused schedule; nothing fires.
                if desc.info.next_action_times and not paused:
                    next_run = desc.info.next_action_times[0]
            except RPCError as exc:
                logger.warning("could not describe Temporal schedule %s: %s", t["external_id"], exc)
            run = last.get(t["job_id"])
            return ScheduleInfo(
                job_id=t["job_id"],
                tenant=t["tenant"],
                name=t["type"],
                expression=str(meta.get("expression", "")),
                timezone=str(meta.get("timezone", "UTC")),
                singleton_key=t["singleton_key"] or t["external_id"],
                data=dict(t["data"] or {}),
                paused=paused,
                next_run_at=next_run,
                last_run_at=_aware(run["run_at"]) if run else None,
                last_run_status=JobStatus(run["status"]) if run else None,
                last_job_id=run["job_id"] if run else None,
                missed_ticks=MissedTickPolicy(meta.get("missed_ticks", "latest")),
                overlap=OverlapPolicy(meta.get("overlap", "allow")),
                runner_type=self.runner_type,
            )

        return list(await asyncio.gather(*(describe(t) for t in trackers)))

    async def set_paused(self, tenant: uuid.UUID, job_id: uuid.UUID, *, paused: bool) -> bool:
        """Pause or resume the Temporal Schedule whose tracker row is ``job_id``; ``False``
        when the tenant has no such schedule."""
        tracker = await self.tracker(tenant, job_id)
        if tracker is None:
            return False
        handle = self._client().get_schedule_handle(tracker["external_id"])
        try:
            if paused:
                await handle.pause(note="paused by jobrunner")
            else:
                await handle.unpause(note="resumed by jobrunner")
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise UnavailableError(
                f"could not {'pause' if paused else 'resume'} schedule: {exc}"
            ) from exc
        next_run = None if paused else await self._next_action(tracker["external_id"])
        async with self.db.connection() as conn:
            await conn.execute(
                self.db.queries.temporal_set_tracker_paused,
                {
                    "tenant": tenant,
                    "job_id": job_id,
                    "paused": paused,
                    "next_run_at": _schedules.iso(next_run),
                },
            )
        return True


def _already_exists(exc: BaseException) -> bool:
    return isinstance(exc, ScheduleAlreadyRunningError) or (
        isinstance(exc, RPCError) and exc.status == RPCStatusCode.ALREADY_EXISTS
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
