"""Value objects returned by the runner API."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobrunner._errors import JobRunnerError

__all__ = [
    "JobCancelledError",
    "JobDetails",
    "JobError",
    "JobFailedError",
    "JobInfo",
    "JobPage",
    "JobStatus",
    "Metrics",
    "MissedTickPolicy",
    "OverlapPolicy",
    "RelatedJob",
    "ScheduleInfo",
    "ScheduledJob",
    "StepInfo",
    "SyncScheduledJob",
]


class JobStatus(str, enum.Enum):
    """Where a job is in its life. See docs/concepts.md for the state diagram."""

    PENDING = "pending"
    """Waiting for its ``run_at`` (scheduled for later)."""
    QUEUED = "queued"
    """Due and waiting for a worker."""
    PROCESSING = "processing"
    """A worker holds a lease on it and its handler runs."""
    RETRYING = "retrying"
    """An attempt failed and the next one waits for its backoff; not final."""
    COMPLETED = "completed"
    """Final: the handler returned."""
    FAILED = "failed"
    """Final: no attempts left, a non-retryable error, or no handler."""
    CANCELLED = "cancelled"
    """Final: cancelled before or while running."""
    ACTIVE = "active"
    """A recurring schedule's tracker row while the schedule is live."""
    WAITING = "waiting"
    """Waiting for its dependencies (``depends_on``) to complete; then queued (or pending
    until its ``run_at``)."""

    @property
    def is_final(self) -> bool:
        """Whether nothing will change this status again (short of ``retry_job``)."""
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
LIVE_STATUSES = (
    JobStatus.PENDING,
    JobStatus.QUEUED,
    JobStatus.PROCESSING,
    JobStatus.RETRYING,
    JobStatus.WAITING,
)


class MissedTickPolicy(str, enum.Enum):
    """What a recurring schedule does about ticks missed while no worker ran."""

    LATEST = "latest"
    """Run once for the latest missed tick (default)."""
    SKIP = "skip"
    """Run none of them; wait for the next tick."""
    ALL = "all"
    """Run every missed tick, bounded by ``max_catch_up``."""


class OverlapPolicy(str, enum.Enum):
    """What a recurring schedule does when its previous run is still live at the next tick."""

    ALLOW = "allow"
    """Start the new run anyway (default)."""
    SKIP = "skip"
    """Skip the tick while a previous run is live."""


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """What scheduling returns: the job's id and the backend's id for it."""

    job_id: uuid.UUID
    """Primary key of the job's row in ``jobs`` (with the tenant)."""
    external_id: str | None
    """The backend's identifier (Temporal workflow id; the job id on PostgreSQL)."""
    tenant: uuid.UUID = field(default=uuid.UUID(int=0))
    """Tenant the job belongs to."""
    created: bool = True
    """False when a singleton key matched an existing job, which is returned instead."""
    _runner: Any = field(default=None, init=False, repr=False, compare=False)

    async def result(self, *, timeout: float | timedelta | None = None) -> Any:
        """Wait until the job is final and return its handler's result.

        Woken by the backend's notification when the job finishes (``wait_for_job``), not by
        polling.

        Args:
            timeout: Seconds (or a ``timedelta``) to wait at most; ``None`` waits for ever.

        Raises:
            JobFailedError: the job failed for good (``.error`` is its last error).
            JobCancelledError: the job was cancelled.
            JobTimeoutError: ``timeout`` passed first (the job goes on).
            JobRunnerError: this handle was not returned by a runner (build one with
                ``runner.wait_for_job`` instead).
        """
        runner = _bound_runner(self)
        return job_result(
            await runner.wait_for_job(self.job_id, tenant=self.tenant, timeout=timeout)
        )


@dataclass(frozen=True, slots=True)
class SyncScheduledJob(ScheduledJob):
    """What the blocking :class:`~jobrunner.SyncJobRunner` returns: ``result`` blocks."""

    def result(self, *, timeout: float | timedelta | None = None) -> Any:
        """Block until the job is final and return its handler's result (see
        :meth:`ScheduledJob.result` for the errors)."""
        runner = _bound_runner(self)
        return job_result(runner.wait_for_job(self.job_id, tenant=self.tenant, timeout=timeout))


def bind_handle(handle: ScheduledJob, runner: Any, *, sync: bool = False) -> ScheduledJob:
    """``handle`` answering :meth:`ScheduledJob.result` through ``runner`` (a blocking
    :class:`SyncScheduledJob` for the sync runner)."""
    if sync and not isinstance(handle, SyncScheduledJob):
        handle = SyncScheduledJob(
            job_id=handle.job_id,
            external_id=handle.external_id,
            tenant=handle.tenant,
            created=handle.created,
        )
    object.__setattr__(handle, "_runner", runner)
    return handle


def _bound_runner(handle: ScheduledJob) -> Any:
    if handle._runner is None:
        raise JobRunnerError(
            f"this handle of job {handle.job_id} was not returned by a runner; "
            "wait with runner.wait_for_job(job_id, tenant=...)"
        )
    return handle._runner


def job_result(info: JobInfo) -> Any:
    """The result of a final job, or the typed error of a failed or cancelled one."""
    if info.status is JobStatus.FAILED:
        raise JobFailedError(info)
    if info.status is JobStatus.CANCELLED:
        raise JobCancelledError(info)
    return info.result


@dataclass(frozen=True, slots=True)
class JobError:
    """The error of a failed attempt."""

    type: str
    """Qualified exception type name."""
    message: str
    """``str(exception)``."""
    traceback: str | None = None
    """Formatted traceback, when one was captured."""

    def to_json(self) -> dict[str, Any]:
        """Serialise for the ``error`` JSONB column."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> JobError | None:
        """Build from the stored JSON; ``None`` stays ``None``."""
        if not value:
            return None
        return cls(
            type=str(value.get("type", "")),
            message=str(value.get("message", "")),
            traceback=value.get("traceback"),
        )


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as ``get_job_status`` reports it."""

    job_id: uuid.UUID
    tenant: uuid.UUID
    name: str
    status: JobStatus
    progress: int
    progress_message: str | None
    result: Any
    error: JobError | None
    attempts: int
    max_attempts: int
    metadata: dict[str, Any]
    runner_type: str
    queue: str
    priority: int
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    run_at: datetime | None
    """When the job is (or was) due; for a retrying job, when its next attempt runs."""
    external_id: str | None = None
    external_run_id: str | None = None
    user_id: uuid.UUID | None = None
    singleton_key: str | None = None
    schedule_id: uuid.UUID | None = None
    """The recurring schedule this job was fired by, if any."""


class JobFailedError(JobRunnerError):
    """Awaiting a job's result: the job failed for good.

    Attributes:
        job: The job as it ended .
        error: Its last attempt's error (``JobError``: type, message, traceback), if any.
    """

    def __init__(self, job: JobInfo) -> None:
        error = job.error
        detail = f": {error.type}: {error.message}" if error is not None else ""
        super().__init__(f"job {job.job_id} ({job.name}) failed{detail}")
        self.job = job
        self.error = error


class JobCancelledError(JobRunnerError):
    """Awaiting a job's result: the job was cancelled.

    Attributes:
        job: The job as it ended .
        reason: The reason given to ``cancel_job``, if any.
    """

    def __init__(self, job: JobInfo) -> None:
        reason = job.metadata.get("cancel_reason") if isinstance(job.metadata, dict) else None
        detail = f": {reason}" if reason else ""
        super().__init__(f"job {job.job_id} ({job.name}) was cancelled{detail}")
        self.job = job
        self.reason = reason if isinstance(reason, str) else None


@dataclass(frozen=True, slots=True)
class StepInfo:
    """A ``job_details`` row: a step of a handler or one attempt of the job."""

    detail_id: uuid.UUID
    step_name: str
    status: JobStatus
    result: Any
    processed_at: datetime | None
    retry_count: int
    metadata: dict[str, Any]

    @property
    def durable(self) -> bool:
        """Whether this is a durable step's row (``ctx.run_step``): once ``completed``, its
        ``result`` is what every later attempt of the job gets back."""
        return self.metadata.get("durable") is True


@dataclass(frozen=True, slots=True)
class JobDetails:
    """A job with everything known about it, for inspection."""

    job: JobInfo
    data: dict[str, Any]
    steps: list[StepInfo]
    """Every ``job_details`` row (attempts and handler steps) in time order."""
    dependencies: list[RelatedJob] = field(default_factory=list)
    """The jobs it waits (or waited) for (``depends_on``), by id; at most
    :data:`RELATIONS_SHOWN`."""
    dependents: list[RelatedJob] = field(default_factory=list)
    """The jobs that wait (or waited) for it, by id; at most :data:`RELATIONS_SHOWN`."""
    children: list[RelatedJob] = field(default_factory=list)
    """The jobs its handler enqueued (``ctx.schedule_job``), by id; at most
    :data:`RELATIONS_SHOWN`."""
    parent_job_id: uuid.UUID | None = None
    """The job whose handler enqueued it, if any."""


#: Most dependencies, dependents and children ``get_job_details`` lists (each).
RELATIONS_SHOWN = 1000


@dataclass(frozen=True, slots=True)
class RelatedJob:
    """A job related to another one (a dependency, a dependent or a child), as
    ``get_job_details`` lists it."""

    job_id: uuid.UUID
    name: str
    status: JobStatus


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of ``list_jobs``; pass ``next_cursor`` back to get the next."""

    jobs: list[JobInfo]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A recurring schedule as ``list_schedules`` reports it."""

    job_id: uuid.UUID
    """The schedule's tracker row in ``jobs``."""
    tenant: uuid.UUID
    name: str
    expression: str
    timezone: str
    singleton_key: str
    data: dict[str, Any]
    paused: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_run_status: JobStatus | None
    last_job_id: uuid.UUID | None
    missed_ticks: MissedTickPolicy
    overlap: OverlapPolicy
    runner_type: str


@dataclass(frozen=True, slots=True)
class Metrics:
    """Counts and rates from ``get_metrics``."""

    by_status: dict[str, int]
    """Jobs per status (every JobStatus value present, zero when none)."""
    total: int
    failed_last_24h: int
    success_rate: float | None
    """completed / (completed + failed) over all history; ``None`` when neither exists."""
    by_runner_type: dict[str, int]
    throughput_per_minute: list[tuple[datetime, int]]
    """Completions per minute over the last hour, oldest first."""
    oldest_queued_age_seconds: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific figures (for example tenant limits in force)."""
