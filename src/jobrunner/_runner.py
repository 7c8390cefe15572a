"""The abstract runner every backend implements, and the worker contract."""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final, Literal, Unpack

from jobrunner._errors import JobNotFoundError, JobTimeoutError
from jobrunner._limits import MAX_WORKER_INTERVAL_SECONDS
from jobrunner._models import (
    JobDetails,
    JobInfo,
    JobPage,
    JobStatus,
    Metrics,
    ScheduledJob,
    ScheduleInfo,
)
from jobrunner._options import (
    BulkOptions,
    EnqueueOptions,
    RecurringOptions,
    TenantArg,
)
from jobrunner._validation import as_seconds, as_tenant, as_uuid, as_wait_timeout
from jobrunner.compat import SeedRunnerNames
from jobrunner.registry import JobHandlerRegistry

__all__ = ["ALL_TENANTS", "AllTenants", "JobRunner", "JobWorker", "TenantArg"]


class AllTenants:
    """Sentinel type: an explicit admin view across every tenant (monitoring only)."""

    _instance: AllTenants | None = None

    def __new__(cls) -> AllTenants:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_TENANTS"


ALL_TENANTS: Final = AllTenants()

HistoryScope = Literal["finished", "all"]


class JobWorker(abc.ABC):
    """A worker that executes jobs for a runner; embed it in a host process or run the CLI."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Run until :meth:`stop` is called (or the task is cancelled), then drain gracefully."""

    @abc.abstractmethod
    async def stop(self, *, grace: float | None = None) -> None:
        """Stop claiming, let running jobs finish within ``grace`` seconds, re-queue the rest."""

    @property
    @abc.abstractmethod
    def started(self) -> asyncio.Event:
        """Set once the worker is consuming (listening and ready to claim)."""


class JobRunner(SeedRunnerNames, abc.ABC):
    """The API host applications use to schedule, inspect and cancel jobs.

    Every method taking ``tenant`` is scoped to it: another tenant's job is "not found". A
    ``tenant`` is a UUID or its string form; ``None`` is the system tenant
    ``00000000-0000-0000-0000-000000000000``.

    Runners are async context managers: ``async with runner: ...`` starts and closes them.
    """

    #: ``"postgres"``, ``"temporal"`` or ``"memory"``; stored in ``jobs.runner_type``.
    runner_type: str = ""

    def __init__(self, registry: JobHandlerRegistry | None = None) -> None:
        self.registry = registry if registry is not None else JobHandlerRegistry.default()

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open connections (and apply migrations when configured). Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> JobRunner:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def is_healthy(self) -> bool:
        """Whether the backend (and its database) answers right now. Never raises."""

    # -- scheduling -------------------------------------------------------------------------
    @abc.abstractmethod
    async def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a job to run as soon as a worker is free.

        Args:
            name: A registered job name.
            data: JSON object passed to the handler.
            **options: :class:`~jobrunner._options.EnqueueOptions`, each optional:
                ``tenant`` (owner of the job), ``priority`` (higher runs first within a
                queue; ``0``), ``singleton_key`` (at most one live job -- pending, queued,
                processing, retrying -- per key and tenant; a second call returns the
                existing job with ``created=False``), ``user_id`` (who asked for it, stored in
                ``jobs.user_id``), ``metadata`` (free-form JSON stored with the job),
                ``queue`` (overrides the handler's queue), ``connection`` (an open psycopg
                connection of the caller's: the job is written in its current transaction
                and exists only if that transaction commits).

        Raises:
            HandlerNotFoundError: ``name`` is not registered (unless the runner was built with
                ``require_registered=False``).
            InvalidArgumentError: an argument is malformed; nothing was written.
            UnknownOptionError: a keyword no option declares (also a ``TypeError``).
        """

    @abc.abstractmethod
    async def schedule_job_at(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a job to run at ``run_at`` (timezone-aware). Options as :meth:`schedule_job`."""

    @abc.abstractmethod
    async def schedule_jobs(
        self,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[ScheduledJob]:
        """Enqueue many jobs of one name in bulk; returns their handles in input order.

        ``options`` (:class:`~jobrunner._options.BulkOptions`) are :meth:`schedule_job`'s
        without ``singleton_key``, plus ``run_at`` for the whole batch.
        """

    @abc.abstractmethod
    async def schedule_recurring_job(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        expression: str,
        **options: Unpack[RecurringOptions],
    ) -> ScheduledJob:
        """Create or update (by ``singleton_key``, default ``<name>:<tenant>``) a schedule.

        ``expression`` is a 5-field cron expression, ``@hourly``/``@daily``/``@weekly``/
        ``@monthly``, or an interval ``"N seconds|minutes|hours|days"``. ``options``
        (:class:`~jobrunner._options.RecurringOptions`): ``tenant``, ``timezone`` (``"UTC"``),
        ``singleton_key``, ``missed_ticks`` (``latest``), ``overlap`` (``allow``),
        ``max_catch_up`` (``10``), ``priority``, ``queue``, ``user_id``, ``metadata``.
        """

    @abc.abstractmethod
    async def list_schedules(self, *, tenant: TenantArg = None) -> list[ScheduleInfo]:
        """The tenant's recurring schedules with next and last run."""

    @abc.abstractmethod
    async def pause_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Pause a schedule (no ticks fire); ``False`` when not found."""

    @abc.abstractmethod
    async def resume_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Resume a paused schedule from its next future tick; ``False`` when not found."""

    # -- inspection and control -------------------------------------------------------------
    @abc.abstractmethod
    async def get_job_status(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobInfo | None:
        """The job's current state, or ``None`` when the tenant has no such job."""

    @abc.abstractmethod
    async def cancel_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Cancel a live job (stopping a running handler) or remove a recurring schedule.

        Returns ``False`` when the job is not found or already final.
        """

    @abc.abstractmethod
    async def retry_job(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Run a failed or cancelled job again (attempts start over); ``False`` otherwise."""

    @abc.abstractmethod
    async def get_job_details(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobDetails | None:
        """The job with its data, every attempt and step, and errors with tracebacks."""

    @abc.abstractmethod
    async def list_jobs(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        status: JobStatus | str | Sequence[JobStatus | str] | None = None,
        name: str | None = None,
        runner_type: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first with keyset pagination; ``ALL_TENANTS`` spans tenants."""

    @abc.abstractmethod
    async def get_metrics(self, *, tenant: TenantArg | AllTenants = None) -> Metrics:
        """Counts by status and runner type, failure and success rates, throughput, queue age."""

    @abc.abstractmethod
    async def clear_history(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        scope: HistoryScope = "finished",
        older_than: timedelta | float | None = None,
    ) -> int:
        """Delete finished (or all non-live) jobs older than ``older_than``; never a live
        schedule or a live job. Returns the number of jobs removed."""

    async def wait_for_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        timeout: float | None = None,
        poll_interval: float = 0.05,
    ) -> JobInfo:
        """Wait until the job is final and return it.

        Backends override this with a push notification where they have one.

        Args:
            job_id: The job.
            tenant: Its tenant.
            timeout: Seconds (or a ``timedelta``) to wait at most, up to
                ``MAX_TIMEOUT_SECONDS``; ``None`` waits for ever.
            poll_interval: Longest pause between two looks at the job, up to
                ``MAX_WORKER_INTERVAL_SECONDS``.

        Raises:
            JobTimeoutError: ``timeout`` seconds passed first (also a ``TimeoutError``).
            JobNotFoundError: no such job for the tenant.
            InvalidArgumentError: an argument is malformed.
        """
        key, tenant_id, seconds, longest = wait_arguments(job_id, tenant, timeout, poll_interval)

        async def poll() -> JobInfo:
            interval = min(longest, 0.01)
            while True:
                info = await self.get_job_status(key, tenant=tenant_id)
                if info is None:
                    raise JobNotFoundError(f"job {key} not found")
                if info.status.is_final:
                    return info
                await asyncio.sleep(interval)
                interval = min(interval * 2, longest)

        return await wait_within(poll(), key, seconds)

    # -- workers ----------------------------------------------------------------------------
    @abc.abstractmethod
    def create_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> JobWorker:
        """A worker executing this runner's registered handlers (not yet started)."""


def wait_arguments(
    job_id: object, tenant: object, timeout: object, poll_interval: object
) -> tuple[uuid.UUID, uuid.UUID, float | None, float]:
    """Check ``wait_for_job``'s arguments (every backend's) before it waits.

    Returns the job id, the tenant, the timeout in seconds (``None``: no limit) and the poll
    interval in seconds.
    """
    return (
        as_uuid(job_id, "job_id"),
        as_tenant(tenant),
        as_wait_timeout(timeout),
        as_seconds(poll_interval, "poll_interval", maximum=MAX_WORKER_INTERVAL_SECONDS),
    )


async def wait_within(
    waiting: Coroutine[Any, Any, JobInfo], job_id: uuid.UUID, timeout: float | None
) -> JobInfo:
    """Await ``waiting`` for at most ``timeout`` seconds.

    Raises:
        JobTimeoutError: the time ran out first; the message names the job and the timeout,
            the same as the sync runner's.
    """
    try:
        async with asyncio.timeout(timeout) as scope:
            return await waiting
    except TimeoutError:
        if scope.expired():
            raise JobTimeoutError(wait_timeout_message(job_id, timeout)) from None
        raise


def wait_timeout_message(job_id: object, timeout: object) -> str:
    """The message of the ``JobTimeoutError`` a ``wait_for_job`` that ran out raises."""
    return f"job {job_id} was not final within {timeout} s"
