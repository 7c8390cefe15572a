"""Recurring jobs as Temporal Schedules: expression parsing and the schedule mapping.

A schedule is a Temporal Schedule (id = the singleton key, default
``recurring-<name>-<tenant>``) whose action starts the generic job workflow with
``job_id=None``; each firing's workflow inserts its own job row linked to the schedule's
tracker row (``jobs.status = 'active'``) through ``schedule_id``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)

from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._recurrence import Recurrence
from jobrunner.backends.temporal._types import WORKFLOW_NAME, JobInput


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
) -> Schedule:
    """The Temporal Schedule for a recurring job."""
    if recurrence.interval is not None:
        spec = ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=recurrence.interval)], time_zone_name=timezone
        )
        period = recurrence.interval
    else:
        assert recurrence.cron is not None
        spec = ScheduleSpec(cron_expressions=[recurrence.cron], time_zone_name=timezone)
        period = timedelta(minutes=1)
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
            catchup_window=_catchup_window(missed_ticks, period, max_catch_up),
        ),
        state=ScheduleState(paused=paused, note="paused by jobrunner" if paused else None),
    )


def _catchup_window(policy: MissedTickPolicy, period: timedelta, max_catch_up: int) -> timedelta:
    """Temporal catches up every missed tick inside its catch-up window (10 s at least)."""
    if policy is MissedTickPolicy.SKIP:
        return timedelta(seconds=10)
    if policy is MissedTickPolicy.LATEST:
        return max(period, timedelta(seconds=10))
    return max(period * max(max_catch_up, 1), timedelta(seconds=10))


def describe_metadata(
    *,
    recurrence: Recurrence,
    timezone: str,
    missed_ticks: MissedTickPolicy,
    overlap: OverlapPolicy,
    max_catch_up: int,
    extra: dict[str, Any],
    paused: bool,
) -> dict[str, Any]:
    """The tracker row's metadata (what list_schedules and the dashboard show)."""
    meta = dict(extra)
    meta.update(
        kind="temporal_schedule",
        expression=recurrence.expression,
        timezone=timezone,
        missed_ticks=missed_ticks.value,
        overlap=overlap.value,
        max_catch_up=max_catch_up,
        paused=paused,
    )
    return meta
