"""Recurring schedules on PostgreSQL (owned by the recurring-jobs work)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from jobrunner._models import ScheduledJob, ScheduleInfo

if TYPE_CHECKING:
    from jobrunner.backends.postgres._runner import PostgresJobRunner


async def cancel_schedule(runner: PostgresJobRunner, tenant: uuid.UUID, job_id: uuid.UUID) -> bool:
    """Remove the schedule whose tracker row is ``job_id``; ``False`` when there is none."""
    return False


async def upsert_schedule(runner: PostgresJobRunner, *args: Any, **kwargs: Any) -> ScheduledJob:
    raise NotImplementedError


async def list_schedules(runner: PostgresJobRunner, tenant: uuid.UUID) -> list[ScheduleInfo]:
    return []


async def set_paused(
    runner: PostgresJobRunner, tenant: uuid.UUID, job_id: uuid.UUID, *, paused: bool
) -> bool:
    return False
