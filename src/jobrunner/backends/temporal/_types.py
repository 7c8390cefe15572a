"""Plain dataclasses exchanged between the client, the job workflow and its activities.

This module is imported inside Temporal's workflow sandbox: keep it free of I/O and of
anything but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WORKFLOW_NAME = "jobrunner.job"
RUN_ACTIVITY = "jobrunner.run_job"
FINISH_ACTIVITY = "jobrunner.finish_job"
REGISTER_RUN_ACTIVITY = "jobrunner.register_run"
PROGRESS_ACTIVITY = "jobrunner.signal_progress"
RESOLVE_POLICY_ACTIVITY = "jobrunner.resolve_policy"
CHECK_RELEASE_ACTIVITY = "jobrunner.check_release"
#: What ``register_run`` returns for a run registered ``waiting`` (``depends_on_previous``):
#: the workflow waits for its release before the first attempt (any other string: skipped).
REGISTERED_WAITING = "jobrunner:waiting"

SIGNAL_CANCEL = "cancelJob"
SIGNAL_PROGRESS = "updateProgress"
#: Internal: the job's dependencies are final (sent by the activity that released it); the
#: waiting workflow checks its row at once instead of at its next poll.
SIGNAL_RELEASED = "jobrunner.released"
#: Internal: the handler's own ``ctx.set_progress`` (already in the table) mirrored into the
#: workflow state so ``getJobState`` agrees with the row.
SIGNAL_PROGRESS_REPORTED = "jobrunner.progressReported"
QUERY_STATE = "getJobState"


@dataclass
class PolicyInput:
    """A handler's RetryPolicy and timeout, as the workflow applies them to the activity."""

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval: float = 30.0
    jitter: float = 0.1
    non_retryable_error_types: list[str] = field(default_factory=list)
    timeout: float = 300.0


@dataclass
class JobInput:
    """The generic job workflow's argument.

    ``job_id`` is ``None`` for a run fired by a Temporal Schedule: the workflow then creates
    the job row itself (linked to the schedule's tracker row through ``schedule_id``).
    """

    job_id: str | None
    tenant: str
    name: str
    data: dict[str, Any]
    policy: PolicyInput | None = None
    heartbeat_timeout: float = 30.0
    schedule_id: str | None = None
    queue: str = "default"
    priority: int = 0
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    waiting: bool = False
    """The row is ``waiting`` for its dependencies: the workflow waits for its release (a
    signal, or its poll of the row) before the first attempt."""


@dataclass
class ReleaseInput:
    """Argument of the activity a waiting workflow asks whether its job was released."""

    job_id: str
    tenant: str


@dataclass
class RunInput:
    """Argument of the activity that runs the handler (one call per attempt)."""

    job_id: str
    tenant: str
    name: str
    data: dict[str, Any]
    policy: PolicyInput


@dataclass
class FinishInput:
    """Argument of the activity that records a final state the handler activity could not."""

    job_id: str
    tenant: str
    status: str
    """``failed`` or ``cancelled``."""
    error_type: str = ""
    message: str = ""
    reason: str | None = None
    cancelled_by: str | None = None


@dataclass
class RegisterRunInput:
    """Argument of the activity that inserts the job row of a scheduled run."""

    job_id: str
    job: JobInput
    scheduled_for: str | None = None
    """The tick's nominal time (ISO 8601) as Temporal passed it, ``None`` if unknown."""


@dataclass
class ProgressInput:
    """Argument of the activity persisting an ``updateProgress`` signal."""

    job_id: str
    tenant: str
    progress: int
    message: str | None = None
