"""The scheduler loop: fires due ticks of recurring schedules as jobs, exactly once per tick.

Every worker runs one (``WorkerSettings.run_scheduler``). Correctness never depends on how
many run: :func:`fire_due` locks due ``schedules`` rows with ``FOR UPDATE SKIP LOCKED``,
inserts one job per tick under the unique key ``(tenant, schedule_id, scheduled_for)`` with
``ON CONFLICT DO NOTHING``, and moves ``next_run_at`` past ``now`` in the same transaction. A
racing scheduler either skips the locked row or, once the first commits, no longer sees it
as due.

Timing: the loop sleeps until ``min(next_run_at)`` (a timer, not a poll) and is woken early by
a NOTIFY on ``<schema>_schedules`` whenever a schedule is created, changed or resumed. A slow
safety poll (``max_sleep``) covers a lost notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobrunner._db._queries import queries_for
from jobrunner._errors import JobRunnerError, ScheduleError
from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._recurrence import DEFAULT_MISFIRE_GRACE, TickPlan, parse_recurrence, plan_ticks
from jobrunner.backends.postgres._schedules import iso, schedules_channel

if TYPE_CHECKING:
    from jobrunner._db._database import Database

__all__ = ["Clock", "FiredSchedule", "Scheduler", "fire_due", "seconds_until_next"]

logger = logging.getLogger("jobrunner.scheduler")

#: A callable returning the current time as an aware datetime.
Clock = Callable[[], datetime]

# A schedule whose stored expression no longer parses (e.g. its zone vanished from tzdata) is
# retried this much later instead of being re-selected in a hot loop.
_BROKEN_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class FiredSchedule:
    """What :func:`fire_due` did for one due schedule."""

    tenant: uuid.UUID
    schedule_id: uuid.UUID
    jobs: list[tuple[uuid.UUID, datetime]] = field(default_factory=list)
    """``(job_id, tick)`` of every job inserted, oldest tick first."""
    skipped: int = 0
    """Due ticks not fired (missed-tick or overlap policy, or already fired elsewhere)."""
    next_run_at: datetime | None = None
    """The schedule's new next tick."""


async def _clock(conn: psycopg.AsyncConnection[Any]) -> datetime:
    cur = await conn.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None
    value = row[0] if not isinstance(row, dict) else row["clock_timestamp"]
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
    exactly one job. Each schedule is fired in a transaction of its own (so a scheduler never
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
    while len(results) < limit:
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            when = now if now is not None else await _clock(conn)
            await cur.execute(q.sched_claim_due, {"now": when, "limit": 1})
            row = await cur.fetchone()
            if row is None:
                break
            results.append(await _fire_one(cur, q, schema, row, when, grace))
    return results


async def _fire_one(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    q: Any,
    schema: str,
    row: dict[str, Any],
    now: datetime,
    grace: timedelta,
) -> FiredSchedule:
    key = {"tenant": row["tenant"], "schedule_id": row["schedule_id"]}
    try:
        rec = parse_recurrence(row["expression"], row["timezone"])
        plan = plan_ticks(
            rec,
            next_run_at=row["next_run_at"],
            now=now,
            policy=MissedTickPolicy(row["missed_ticks"]),
            max_catch_up=row["max_catch_up"],
            grace=grace,
        )
    except (ScheduleError, ValueError) as exc:
        logger.error(
            "schedule %s (%s %r in %s) cannot be evaluated: %s; retrying in %s",
            row["schedule_id"],
            row["name"],
            row["expression"],
            row["timezone"],
            exc,
            _BROKEN_RETRY,
        )
        plan = TickPlan([], 0, now + _BROKEN_RETRY)
    fire_times = list(plan.fire_times)
    skipped = plan.skipped
    if fire_times and row["overlap"] == OverlapPolicy.SKIP.value:
        await cur.execute(q.sched_has_live_run, key)
        live = await cur.fetchone()
        if live is not None and live["live"]:
            skipped += len(fire_times)
            fire_times = []
        elif len(fire_times) > 1:
            # At most one run at a time: of a catch-up burst only the latest tick runs.
            skipped += len(fire_times) - 1
            fire_times = fire_times[-1:]
    inserted: list[tuple[uuid.UUID, datetime]] = []
    runs: list[dict[str, Any]] = []
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


class Scheduler:
    """The loop a worker runs: fire what is due, sleep until the next tick or a NOTIFY.

    Args:
        db: The runner's database.
        clock: Returns the current aware datetime; default: the database clock (one clock for
            every host, so skewed hosts cannot fire early).
        batch: Schedules handled per transaction.
        max_sleep: Longest sleep without a notification (safety net).
        grace: Lateness beyond which a tick counts as missed.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        batch: int = 100,
        max_sleep: float = 30.0,
        grace: timedelta = DEFAULT_MISFIRE_GRACE,
    ) -> None:
        self.db = db
        self.clock = clock
        self.batch = batch
        self.max_sleep = max_sleep
        self.grace = grace
        self.fired_total = 0
        self.listening = asyncio.Event()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due ticks now."""
        self._wake.set()

    async def run_once(self) -> float:
        """Fire everything due; return seconds to sleep before the next look."""
        async with self.db.connection() as conn:
            while True:
                fired = await fire_due(
                    conn, self.db.schema, self._now(), limit=self.batch, grace=self.grace
                )
                self.fired_total += sum(len(f.jobs) for f in fired)
                if len(fired) < self.batch:
                    break
            delay = await seconds_until_next(conn, self.db.schema, self._now())
        if delay is None:
            return self.max_sleep
        # A hair late rather than early: waking before the tick would only loop once more.
        return min(max(delay, 0.0) + 0.002, self.max_sleep)

    async def run(self) -> None:
        """Run until cancelled."""
        listener = asyncio.create_task(self._listen_loop(), name="jobrunner-scheduler-listen")
        backoff = 0.2
        try:
            while True:
                self._wake.clear()
                try:
                    delay = await self.run_once()
                    backoff = 0.2
                except (JobRunnerError, psycopg.Error, OSError) as exc:
                    logger.warning("scheduler pass failed (%s); retrying in %.1f s", exc, backoff)
                    delay = backoff
                    backoff = min(backoff * 2, self.max_sleep)
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event fires, and the worker's shutdown would then hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    def _now(self) -> datetime | None:
        return None if self.clock is None else self.clock()

    async def _listen_loop(self) -> None:
        backoff = 0.2
        channel = schedules_channel(self.db.schema)
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await self.db.dedicated_connection()
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                self.listening.set()
                self._wake.set()  # changes made while we were not listening
                backoff = 0.2
                gen = conn.notifies()
                try:
                    async for _note in gen:
                        self._wake.set()
                finally:
                    await gen.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on any listener failure
                logger.warning("scheduler listener lost (%s); reconnecting in %.1f s", exc, backoff)
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
