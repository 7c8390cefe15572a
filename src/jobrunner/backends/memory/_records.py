"""The in-memory backend's rows: jobs (with their ``job_details``) and recurring schedules.

They hold what the PostgreSQL tables hold, as the database would hand it back (JSON values
after a round trip), so the in-memory store behaves like the real one.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobrunner._errors import InvalidArgumentError
from jobrunner._models import (
    JobError,
    JobInfo,
    JobStatus,
    MissedTickPolicy,
    OverlapPolicy,
    ScheduledJob,
    StepInfo,
)
from jobrunner._policy import JobPolicy
from jobrunner._recurrence import Recurrence

__all__ = [
    "CLAIMABLE",
    "FINAL",
    "DetailRecord",
    "EdgeRecord",
    "JobRecord",
    "ScheduleRecord",
    "decode_cursor",
    "encode_cursor",
    "handle",
    "iso",
    "roundtrip",
]

CLAIMABLE = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING})
FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def roundtrip(value: Any) -> Any:
    """What a value looks like after a trip through JSONB (tuples become lists, copies)."""
    return json.loads(json.dumps(value, allow_nan=False))


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC (``None`` stays ``None``)."""
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass(eq=False)
class DetailRecord:
    """A ``job_details`` row: an attempt, a step or a retry."""

    detail_id: uuid.UUID
    step_name: str
    status: JobStatus
    result: Any
    processed_at: datetime
    retry_count: int
    metadata: dict[str, Any]

    def info(self) -> StepInfo:
        """As ``get_job_details`` reports it."""
        return StepInfo(
            detail_id=self.detail_id,
            step_name=self.step_name,
            status=self.status,
            result=roundtrip(self.result),
            processed_at=self.processed_at,
            retry_count=self.retry_count,
            metadata=roundtrip(self.metadata),
        )


@dataclass(eq=False)
class EdgeRecord:
    """A ``job_dependencies`` row: ``job_id`` waits for ``depends_on``."""

    depends_on: uuid.UUID
    job_id: uuid.UUID
    run_on_failure: bool
    resolved: bool = False


@dataclass(eq=False)
class JobRecord:
    """A ``jobs`` row."""

    tenant: uuid.UUID
    job_id: uuid.UUID
    name: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    status: JobStatus
    created_at: datetime
    user_id: uuid.UUID
    queue: str
    priority: int
    run_at: datetime
    max_attempts: int
    seq: int
    """Insertion order (the last claim-order tie-breaker, and the list cursor's)."""
    singleton_key: str | None = None
    schedule_id: uuid.UUID | None = None
    updated_at: datetime | None = None
    result: Any = None
    error: JobError | None = None
    progress: int = 0
    progress_message: str | None = None
    attempts: int = 0
    lease_token: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    details: list[DetailRecord] = field(default_factory=list)
    policy: JobPolicy | None = None
    """The policy stored with the job (``None``: pinned by the first claim)."""
    tracker: bool = False
    """A recurring schedule's tracker row (status ``active``, then ``cancelled``)."""
    worker_id: uuid.UUID | None = None
    """Who holds the lease of the running attempt."""
    lease_expires: float | None = None
    """When that lease runs out (``time.monotonic()``: leases are about the process being
    alive, so moving a fake clock never expires one)."""
    scheduled_for: datetime | None = None
    """The tick of the schedule that fired this job."""
    dependencies_left: int = 0
    """Dependencies not final yet (``waiting`` while above 0)."""
    parent_job_id: uuid.UUID | None = None
    """The job whose handler enqueued this one (``ctx.schedule_job``)."""

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID]:
        """``(tenant, job_id)``."""
        return (self.tenant, self.job_id)

    def holds(self, lease_token: int) -> bool:
        """Whether the attempt with ``lease_token`` is still this job's running attempt."""
        return self.status is JobStatus.PROCESSING and self.lease_token == lease_token

    def info(self, runner_type: str) -> JobInfo:
        """As ``get_job_status`` reports it."""
        return JobInfo(
            job_id=self.job_id,
            tenant=self.tenant,
            name=self.name,
            status=self.status,
            progress=self.progress,
            progress_message=self.progress_message,
            result=roundtrip(self.result),
            error=self.error,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            metadata=roundtrip(self.metadata),
            runner_type=runner_type,
            queue=self.queue,
            priority=self.priority,
            created_at=self.created_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            run_at=self.run_at,
            external_id=str(self.job_id),
            external_run_id=None,
            user_id=self.user_id,
            singleton_key=self.singleton_key,
            schedule_id=self.schedule_id,
        )


@dataclass(eq=False)
class ScheduleRecord:
    """A ``schedules`` row, with its tracker job."""

    tracker: JobRecord
    key: str
    rec: Recurrence
    name: str
    data: dict[str, Any]
    user_metadata: dict[str, Any]
    priority: int
    queue: str
    user_id: uuid.UUID
    max_attempts: int
    policy: JobPolicy | None
    missed_ticks: MissedTickPolicy
    overlap: OverlapPolicy
    max_catch_up: int
    next_run_at: datetime
    paused: bool = False
    last_run_at: datetime | None = None
    last_job_id: uuid.UUID | None = None
    skipped_ticks: int = 0
    depends_on_previous: bool = False
    """A tick's job waits until the previous tick's job is final."""


def handle(job: JobRecord, *, created: bool) -> ScheduledJob:
    """The handle an enqueue returns for ``job``."""
    return ScheduledJob(
        job_id=job.job_id, external_id=str(job.job_id), tenant=job.tenant, created=created
    )


def encode_cursor(job: JobRecord) -> str:
    """The opaque ``list_jobs`` cursor after ``job``."""
    raw = f"{job.created_at.isoformat()}|{job.seq}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    """A cursor from :func:`encode_cursor`; anything else is refused."""
    if cursor is None:
        return None
    if not isinstance(cursor, str):
        raise InvalidArgumentError("cursor is not one this runner returned")
    try:
        stamp, seq = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), int(seq)
    except (ValueError, UnicodeDecodeError, TypeError):
        raise InvalidArgumentError("cursor is not one this runner returned") from None
