"""jobrunner: background jobs for Python applications.

Register handlers with :func:`job`, get a runner from :class:`JobRunnerFactory`, and schedule.
"""

from jobrunner._config import Settings
from jobrunner._context import JobContext, SyncJobContext
from jobrunner._errors import (
    ConfigurationError,
    DatabaseError,
    DependencyError,
    DuplicateHandlerError,
    DuplicateStepError,
    HandlerNotFoundError,
    InvalidArgumentError,
    JobNotFoundError,
    JobRunnerError,
    JobTimeoutError,
    NonRetryable,
    NotSupportedError,
    Retry,
    ScheduleError,
    StepFencedError,
    UnavailableError,
    UnknownOptionError,
)
from jobrunner._factory import JobRunnerFactory
from jobrunner._models import (
    JobCancelledError,
    JobDetails,
    JobError,
    JobFailedError,
    JobInfo,
    JobPage,
    JobStatus,
    Metrics,
    MissedTickPolicy,
    OverlapPolicy,
    ScheduledJob,
    ScheduleInfo,
    StepInfo,
)
from jobrunner._policy import RetryPolicy
from jobrunner._runner import ALL_TENANTS, JobRunner, JobWorker
from jobrunner._sync import SyncJobRunner, SyncJobWorker
from jobrunner._validation import SYSTEM_TENANT
from jobrunner.compat import JobScheduler
from jobrunner.registry import JobHandlerRegistry, job

__all__ = [
    "ALL_TENANTS",
    "SYSTEM_TENANT",
    "ConfigurationError",
    "DatabaseError",
    "DependencyError",
    "DuplicateHandlerError",
    "DuplicateStepError",
    "HandlerNotFoundError",
    "InvalidArgumentError",
    "JobCancelledError",
    "JobContext",
    "JobDetails",
    "JobError",
    "JobFailedError",
    "JobHandlerRegistry",
    "JobInfo",
    "JobNotFoundError",
    "JobPage",
    "JobRunner",
    "JobRunnerError",
    "JobRunnerFactory",
    "JobScheduler",
    "JobStatus",
    "JobTimeoutError",
    "JobWorker",
    "Metrics",
    "MissedTickPolicy",
    "NonRetryable",
    "NotSupportedError",
    "OverlapPolicy",
    "Retry",
    "RetryPolicy",
    "ScheduleError",
    "ScheduleInfo",
    "ScheduledJob",
    "Settings",
    "StepFencedError",
    "StepInfo",
    "SyncJobContext",
    "SyncJobRunner",
    "SyncJobWorker",
    "UnavailableError",
    "UnknownOptionError",
    "job",
]
