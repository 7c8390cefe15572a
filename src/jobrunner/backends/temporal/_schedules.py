"""Recurring jobs as Temporal Schedules: expression parsing and the schedule mapping.

A schedule is a Temporal Schedule (id = the singleton key, default
``recurring-<name>-<tenant>``) whose action starts the generic job workflow with
``job_id=None``; each firing's workflow inserts its own job row linked to the schedule's
tracker row (``jobs.status = 'active'``) through ``schedule_id`` and to its tick through
``scheduled_for`` (unique per schedule: a second firing of the same tick is a no-op).

What PostgreSQL's scheduler decides when it fires, this backend decides per run (Temporal
starts the workflows): :func:`tick_decision` applies the missed-tick policy,
:func:`canonical_tick` gives the tick's dedupe key, :func:`dst_gap_calendars` adds the DST-gap
firings Temporal would not make.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)

from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._recurrence import DEFAULT_MISFIRE_GRACE, Recurrence
from jobrunner.backends.temporal._types import WORKFLOW_NAME, JobInput

#: Years ahead for which DST-gap ticks get explicit calendar entries (refreshed by every
#: ``schedule_recurring_job`` call for the schedule).
DST_GAP_YEARS = 5
#: Ticks sampled to find a cron's period (longest gap between consecutive ticks).
_PERIOD_SAMPLES = 1000
_MAX_GAP_TICKS = 1000
_MIN_CATCHUP = timedelta(seconds=10)


def schedule_id_for(name: str, tenant: uuid.UUID, singleton_key: str | None) -> str:
    """The Temporal Schedule id: the singleton key, else ``recurring-<name>-<tenant>``."""
    return singleton_key if singleton_key is not None else f"recurring-{name}-{tenant}"


def build_schedule(
    *,
    recurrence: Recurrence,
    timezone: str,
    job: JobInput,
    workflow_id: str,
    task_queue: str,
    missed_ticks: MissedTickPolicy,
    overlap: OverlapPolicy,
    max_catch_up: int,
    paused: bool = False,
    interval_offset: timedelta | None = None,
    now: datetime | None = None,
) -> Schedule:
    """The Temporal Schedule for a recurring job.

    Args:
        interval_offset: For intervals, the grid offset (see :func:`interval_offset_for`);
            default: the one putting the first tick one interval after ``now``.
        now: The current instant (tests); default: the wall clock.
    """
    clock = datetime.now(UTC) if now is None else now
    if recurrence.interval is not None:
        offset = (
            interval_offset
            if interval_offset is not None
            else interval_offset_for(recurrence.interval, clock)
        )
        spec = ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=recurrence.interval, offset=offset)],
            time_zone_name=timezone,
        )
        period = recurrence.interval
    else:
        assert recurrence.cron is not None
        spec = ScheduleSpec(
            cron_expressions=[recurrence.cron],
            calendars=dst_gap_calendars(recurrence, clock),
            time_zone_name=timezone,
        )
        period = cron_period(recurrence, clock)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW_NAME,
            job,
            id=workflow_id,
            task_queue=task_queue,
            memo={"tenant": job.tenant, "name": job.name, "schedule_id": job.schedule_id},
        ),
        spec=spec,
        policy=SchedulePolicy(
            overlap=(
                ScheduleOverlapPolicy.ALLOW_ALL
                if overlap is OverlapPolicy.ALLOW
                else ScheduleOverlapPolicy.SKIP
            ),
            catchup_window=catchup_window(missed_ticks, period, max_catch_up),
        ),
        state=ScheduleState(paused=paused, note="paused by jobrunner" if paused else None),
    )


def interval_offset_for(interval: timedelta, now: datetime) -> timedelta:
    """The ``ScheduleIntervalSpec.offset`` that makes ``now`` (to the second) a grid point.

    Temporal's interval ticks are ``epoch + k * every + offset``; without an offset they align
    to the Unix epoch. With this offset the first tick is ``now + interval`` (rounded down to
    the second), as on PostgreSQL.
    """
    every = max(int(interval.total_seconds()), 1)
    return timedelta(seconds=int(now.timestamp()) % every)


def cron_period(
    recurrence: Recurrence, now: datetime, *, samples: int = _PERIOD_SAMPLES
) -> timedelta:
    """The longest gap between consecutive ticks of a cron among the next ``samples`` ticks
    (wall clock of the schedule's zone): the period the catch-up window is sized from."""
    assert recurrence.cron is not None
    local = now.astimezone(ZoneInfo(recurrence.timezone)).replace(tzinfo=None)
    it = croniter(recurrence.cron, local)
    previous: datetime = it.get_next(datetime)
    longest = timedelta(0)
    for _ in range(samples):
        following: datetime = it.get_next(datetime)
        longest = max(longest, following - previous)
        previous = following
    return max(longest, timedelta(minutes=1))


def catchup_window(policy: MissedTickPolicy, period: timedelta, max_catch_up: int) -> timedelta:
    """Temporal's catch-up window: how far back it still starts ticks it missed while the
    *server* was down (10 s at least). Which of the started runs really run is decided per run
    by :func:`tick_decision`."""
    if policy is MissedTickPolicy.SKIP:
        return max(DEFAULT_MISFIRE_GRACE, _MIN_CATCHUP)
    if policy is MissedTickPolicy.LATEST:
        return max(period, _MIN_CATCHUP)
    return max(period * max(max_catch_up, 1), _MIN_CATCHUP)


def dst_gap_calendars(
    recurrence: Recurrence, now: datetime, *, years: int = DST_GAP_YEARS
) -> list[ScheduleCalendarSpec]:
    """Explicit calendar entries for the cron's wall times that fall into a DST gap.

    Temporal does not fire a cron time that does not exist (``0 2 * * *`` in Europe/Berlin on
    the spring-forward day). jobrunner's rule (see ``jobrunner._recurrence``) fires it once,
    shifted forward by the gap's length; so each such tick in the next ``years`` years gets
    an exact entry for its shifted wall time (``03:00`` that day), unless the shifted time is
    a tick of the expression anyway.
    """
    assert recurrence.cron is not None
    zone = ZoneInfo(recurrence.timezone)
    entries: list[ScheduleCalendarSpec] = []
    for wall_start, length in dst_gaps(zone, now, now + timedelta(days=366 * years)):
        it = croniter(recurrence.cron, wall_start - timedelta(seconds=1))
        for _ in range(_MAX_GAP_TICKS):
            wall: datetime = it.get_next(datetime)
            if wall >= wall_start + length:
                break
            shifted = wall + length
            if croniter.match(recurrence.cron, shifted):
                continue  # fires anyway; one run for both
            entries.append(
                ScheduleCalendarSpec(
                    second=[ScheduleRange(shifted.second)],
                    minute=[ScheduleRange(shifted.minute)],
                    hour=[ScheduleRange(shifted.hour)],
                    day_of_month=[ScheduleRange(shifted.day)],
                    month=[ScheduleRange(shifted.month)],
                    year=[ScheduleRange(shifted.year)],
                    comment="jobrunner: DST gap",
                )
            )
    return entries


def dst_gaps(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, timedelta]]:
    """The spring-forward gaps of ``zone`` between ``start`` and ``end``: ``(first missing
    wall time (naive), gap length)``."""
    found: list[tuple[datetime, timedelta]] = []
    cursor = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    step = timedelta(days=1)
    before = cursor.astimezone(zone).utcoffset()
    while cursor < end:
        after_instant = cursor + step
        after = after_instant.astimezone(zone).utcoffset()
        if after != before and before is not None and after is not None:
            low, high = cursor, after_instant
            while high - low > timedelta(minutes=1):
                mid = low + (high - low) / 2
                if mid.astimezone(zone).utcoffset() == before:
                    low = mid
                else:
                    high = mid
            transition = high.replace(second=0, microsecond=0)
            if after > before:
                found.append(((transition + before).replace(tzinfo=None), after - before))
        before = after
        cursor = after_instant
    return found


def canonical_tick(nominal: datetime, recurrence: Recurrence) -> datetime:
    """The tick a Temporal firing stands for: the key ``jobs.scheduled_for`` dedupes on.

    Cron ticks are wall-clock times: a firing at the second occurrence of a wall time that
    happens twice (DST fall-back) is the same tick as the first occurrence, as on PostgreSQL
    (which fires only the first); a shifted DST-gap firing maps to the instant the nominal
    gap time denotes. Intervals are elapsed time and stay as they are.
    """
    nominal = nominal.astimezone(UTC)
    if recurrence.kind != "cron":
        return nominal
    zone = ZoneInfo(recurrence.timezone)
    wall = nominal.astimezone(zone).replace(tzinfo=None)
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def is_tick(recurrence: Recurrence, tick: datetime, interval_offset: int | None = None) -> bool:
    """Whether ``tick`` (canonical, see :func:`canonical_tick`) is a tick of the schedule.

    Firings that are not (``ScheduleHandle.trigger()``, "run now" in the Temporal UI) are
    explicit requests: they get no ``scheduled_for`` and no missed-tick decision.
    """
    tick = tick.astimezone(UTC)
    if recurrence.interval is not None:
        if interval_offset is None:
            return True  # a tracker from before offsets were recorded: assume the grid
        every = max(int(recurrence.interval.total_seconds()), 1)
        seconds = tick.timestamp() - interval_offset
        return tick.microsecond == 0 and int(seconds) % every == 0
    return recurrence.next_after(tick - timedelta(microseconds=1)) == tick


def tick_decision(
    recurrence: Recurrence,
    tick: datetime,
    now: datetime,
    *,
    missed_ticks: MissedTickPolicy,
    overlap: OverlapPolicy,
    max_catch_up: int,
    grace: timedelta = DEFAULT_MISFIRE_GRACE,
) -> str | None:
    """Whether the run Temporal started for ``tick`` runs now: ``None``, or why it is skipped.

    Temporal starts a workflow per tick even while no worker polls; when workers return,
    those runs all start. This applies jobrunner's missed-tick policy to each of them:

    * ``latest``: a run whose tick already has a newer regular tick due is superseded;
    * ``skip``: the same, and a run more than ``grace`` late is dropped;
    * ``all``: a run with ``max_catch_up`` or more newer ticks due is dropped.

    With ``overlap="skip"`` Temporal starts no newer run while one is open, so that run stands
    for the latest missed tick and is not superseded (``skip`` still drops it when late).
    """
    tick = tick.astimezone(UTC)
    now = now.astimezone(UTC)
    if missed_ticks is MissedTickPolicy.SKIP and now - tick > grace:
        return "missed"
    if overlap is OverlapPolicy.SKIP:
        return None
    if missed_ticks is MissedTickPolicy.ALL:
        cursor = tick
        for _ in range(max_catch_up):
            cursor = _next_regular(recurrence, cursor)
            if cursor > now:
                return None
        return "beyond max_catch_up"
    if _next_regular(recurrence, tick) <= now:
        return "superseded"
    return None


def _next_regular(recurrence: Recurrence, tick: datetime) -> datetime:
    if recurrence.interval is not None:
        return tick + recurrence.interval
    return recurrence.next_after(tick)


def describe_metadata(
    *,
    recurrence: Recurrence,
    timezone: str,
    missed_ticks: MissedTickPolicy,
    overlap: OverlapPolicy,
    max_catch_up: int,
    extra: dict[str, Any],
    paused: bool,
    tracker_id: uuid.UUID,
    schedule_id: str,
    singleton_key: str,
    interval_offset: timedelta | None = None,
) -> dict[str, Any]:
    """The tracker row's metadata: the keys PostgreSQL's tracker has (``recurring``, ``kind``
    cron/interval, ``next_run_at``, ``last_run_*`` ...) plus ``temporal_schedule_id``.

    ``next_run_at`` starts empty (the runner fills it from Temporal's description);
    ``last_run_at``, ``last_job_id``, ``last_run_status`` and ``skipped_ticks`` are kept by
    the tracker update and advanced by each run (see ``_activities.register_run``).
    """
    meta = dict(extra)
    meta.update(
        recurring=True,
        schedule_id=str(tracker_id),
        temporal_schedule_id=schedule_id,
        singleton_key=singleton_key,
        kind=recurrence.kind,
        expression=recurrence.expression,
        timezone=timezone,
        missed_ticks=missed_ticks.value,
        overlap=overlap.value,
        max_catch_up=max_catch_up,
        paused=paused,
        next_run_at=None,
        last_run_at=None,
        last_job_id=None,
        last_run_status=None,
        skipped_ticks=0,
    )
    if interval_offset is not None:
        meta["interval_offset_seconds"] = int(interval_offset.total_seconds())
    return meta


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC for JSON metadata."""
    return None if value is None else value.astimezone(UTC).isoformat()
