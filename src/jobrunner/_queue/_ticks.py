"""Which due ticks of a recurring schedule fire: the decision every store applies.

Pure: the store supplies the schedule and, for the ``skip`` overlap policy, whether a run of
it is still live; it then inserts one job per tick and moves the schedule past ``now``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jobrunner._errors import ScheduleError
from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._recurrence import TickPlan, parse_recurrence, plan_ticks

__all__ = ["BROKEN_RETRY", "DueSchedule", "iso", "limit_overlap", "plan_due_ticks"]

logger = logging.getLogger("jobrunner.scheduler")

#: A schedule whose stored expression no longer parses (e.g. its zone vanished from tzdata) is
#: looked at again this much later instead of being re-selected in a hot loop.
BROKEN_RETRY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """The facts of a due schedule that decide its ticks."""

    schedule_id: uuid.UUID
    name: str
    expression: str
    timezone: str
    next_run_at: datetime
    missed_ticks: MissedTickPolicy
    max_catch_up: int
    overlap: OverlapPolicy


def plan_due_ticks(schedule: DueSchedule, now: datetime, grace: timedelta) -> TickPlan:
    """The ticks due at ``now`` that the missed-tick policy fires, and the next tick.

    A schedule whose expression no longer evaluates fires nothing and is looked at again
    :data:`BROKEN_RETRY` later (logged as an error).
    """
    try:
        rec = parse_recurrence(schedule.expression, schedule.timezone)
        return plan_ticks(
            rec,
            next_run_at=schedule.next_run_at,
            now=now,
            policy=schedule.missed_ticks,
            max_catch_up=schedule.max_catch_up,
            grace=grace,
        )
    except (ScheduleError, ValueError) as exc:
        logger.error(
            "schedule %s (%s %r in %s) cannot be evaluated: %s; retrying in %s",
            schedule.schedule_id,
            schedule.name,
            schedule.expression,
            schedule.timezone,
            exc,
            BROKEN_RETRY,
        )
        return TickPlan([], 0, now + BROKEN_RETRY)


def limit_overlap(
    fire_times: list[datetime], skipped: int, *, live: bool
) -> tuple[list[datetime], int]:
    """Apply the ``skip`` overlap policy: at most one run at a time.

    With a run still live nothing fires; otherwise of a catch-up burst only the latest tick
    runs. Returns the ticks to fire and the new count of skipped ticks.
    """
    if live:
        return [], skipped + len(fire_times)
    if len(fire_times) > 1:
        return fire_times[-1:], skipped + len(fire_times) - 1
    return fire_times, skipped


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC for JSON metadata (``None`` stays ``None``)."""
    return None if value is None else value.astimezone(UTC).isoformat()
