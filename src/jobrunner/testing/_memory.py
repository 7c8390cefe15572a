"""InMemoryJobRunner: the whole JobRunner API in process memory, for fast unit tests.

Behaviour follows the PostgreSQL backend: the same validation at the boundary, the same status
transitions and ``job_details`` rows, failure decisions from :func:`decide_failure`, timeouts
with ``asyncio.timeout``, and cancellation that reaches a running handler. Time comes from a
:class:`Clock`; by default a :class:`FakeClock` that only moves when a test moves it (or when
:func:`adrain` jumps over a retry's backoff).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Unpack

from jobrunner._context import JobContext
from jobrunner._db._monitoring import list_filters
from jobrunner._errors import InvalidArgumentError
from jobrunner._execution import AbortReason, Attempt, Completed, Failed, run_attempt
from jobrunner._jobargs import JobArgs, bulk_args, enqueue_args, recurring_args
from jobrunner._models import (
    LIVE_STATUSES,
    JobDetails,
    JobError,
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
from jobrunner._options import BulkOptions, EnqueueOptions, RecurringOptions, checked_options
from jobrunner._policy import JobPolicy
from jobrunner._recurrence import (
    DEFAULT_MISFIRE_GRACE,
    Recurrence,
    plan_ticks,
)
from jobrunner._runner import (
    ALL_TENANTS,
    AllTenants,
    HistoryScope,
    JobRunner,
    JobWorker,
    TenantArg,
    wait_arguments,
    wait_within,
)
from jobrunner._telemetry import enqueue_boundary
from jobrunner._validation import (
    as_aware_datetime,
    as_bulk_data,
    as_data,
    as_history_age,
    as_optional_text,
    as_tenant,
    as_uuid,
)
from jobrunner.registry import JobHandlerRegistry
from jobrunner.testing._clock import Clock, FakeClock, SystemClock

__all__ = ["InMemoryJobRunner", "MemoryWorker"]

_LIVE = frozenset(LIVE_STATUSES)
_CLAIMABLE = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING})
_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def _roundtrip(value: Any) -> Any:
    """What a value looks like after a trip through JSONB (tuples become lists, copies)."""
    return json.loads(json.dumps(value, allow_nan=False))


@dataclass(eq=False)
class _Detail:
    detail_id: uuid.UUID
    step_name: str
    status: JobStatus
    result: Any
    processed_at: datetime
    retry_count: int
    metadata: dict[str, Any]

    def info(self) -> StepInfo:
        return StepInfo(
            detail_id=self.detail_id,
            step_name=self.step_name,
            status=self.status,
            result=_roundtrip(self.result),
            processed_at=self.processed_at,
            retry_count=self.retry_count,
            metadata=_roundtrip(self.metadata),
        )


@dataclass(eq=False)
class _Job:
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
    details: list[_Detail] = field(default_factory=list)
    policy: JobPolicy | None = None
    """The policy stored with the job (``None``: pinned by the first claim)."""
    tracker: bool = False
    """A recurring schedule's tracker row (status ``active``, then ``cancelled``)."""

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID]:
        return (self.tenant, self.job_id)

    def info(self, runner_type: str) -> JobInfo:
        return JobInfo(
            job_id=self.job_id,
            tenant=self.tenant,
            name=self.name,
            status=self.status,
            progress=self.progress,
            progress_message=self.progress_message,
            result=_roundtrip(self.result),
            error=self.error,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            metadata=_roundtrip(self.metadata),
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
class _Schedule:
    tracker: _Job
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


@dataclass(eq=False)
class _Running:
    job: _Job
    attempt: Attempt
    loop: asyncio.AbstractEventLoop

    @property
    def ctx(self) -> JobContext:
        return self.attempt.ctx

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID, int]:
        return (self.job.tenant, self.job.job_id, self.attempt.ctx.lease_token)


class _MemorySink:
    """The JobSink of in-memory handlers: progress and steps land on the job object."""

    def __init__(self, runner: InMemoryJobRunner) -> None:
        self.runner = runner

    def _job(self, ctx: JobContext) -> _Job | None:
        job = self.runner._jobs.get((ctx.tenant, ctx.job_id))
        # Fenced like the PostgreSQL sink: a cancelled or superseded attempt changes nothing.
        if job is None or job.status is not JobStatus.PROCESSING:
            return None
        if job.lease_token != ctx.lease_token:
            return None
        return job

    async def save_progress(self, ctx: JobContext, progress: int, message: str | None) -> None:
        job = self._job(ctx)
        if job is not None:
            job.progress = progress
            job.progress_message = message
            job.updated_at = self.runner.clock.now()
            self.runner._notify()

    async def start_step(self, ctx: JobContext, name: str) -> uuid.UUID:
        detail_id = uuid.uuid4()
        job = self.runner._jobs.get((ctx.tenant, ctx.job_id))
        now = self.runner.clock.now()
        if job is not None:
            job.details.append(
                _Detail(
                    detail_id,
                    name,
                    JobStatus.PROCESSING,
                    None,
                    now,
                    ctx.attempt,
                    {"started_at": now.isoformat()},
                )
            )
            self.runner._notify()
        return detail_id

    async def finish_step(
        self, ctx: JobContext, detail_id: uuid.UUID, *, ok: bool, result: Any, error: Any
    ) -> None:
        job = self.runner._jobs.get((ctx.tenant, ctx.job_id))
        if job is None:
            return
        payload = result if ok else error
        try:
            stored = _roundtrip(payload)
        except (TypeError, ValueError):
            stored = {"repr": repr(payload)[:2000]}
        now = self.runner.clock.now()
        for detail in job.details:
            if detail.detail_id == detail_id:
                detail.status = JobStatus.COMPLETED if ok else JobStatus.FAILED
                detail.result = stored
                detail.processed_at = now
                detail.metadata["finished_at"] = now.isoformat()
        self.runner._notify()


class InMemoryJobRunner(JobRunner):
    """The :class:`JobRunner` API without a database, for unit tests (``runner_type='memory'``).

    Nothing runs on its own: jobs run when drained (``await adrain(runner)``), when a worker
    from :meth:`create_worker` runs, or at once with ``eager=True``.

    Args:
        registry: Handler registry (default: the process-wide one that ``@job`` fills).
        clock: Where time comes from; default a :class:`FakeClock` frozen at creation.
        eager: Run a job (with its retries) inside ``schedule_job``/``schedule_jobs`` before
            returning, like Celery's ``task_always_eager``. Jobs due later still wait.
        require_registered: Refuse to schedule names without a handler, as PostgreSQL does.
        rand: Source of jitter for retry delays; inject for deterministic backoff.

    Example:
        >>> runner = InMemoryJobRunner()
        >>> handle = await runner.schedule_job("send-email", {"to": "a@example.com"})
        >>> await adrain(runner)
        >>> (await runner.get_job_status(handle.job_id)).status
        <JobStatus.COMPLETED: 'completed'>
    """

    runner_type = "memory"

    def __init__(
        self,
        registry: JobHandlerRegistry | None = None,
        *,
        clock: Clock | None = None,
        eager: bool = False,
        require_registered: bool = True,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(registry)
        if clock is not None and not isinstance(clock, Clock):
            raise InvalidArgumentError("clock must have a now() method returning a datetime")
        self.clock: Clock = clock if clock is not None else FakeClock()
        self.eager = bool(eager)
        self.require_registered = require_registered
        self.rand = rand
        self._jobs: dict[tuple[uuid.UUID, uuid.UUID], _Job] = {}
        self._schedules: dict[tuple[uuid.UUID, uuid.UUID], _Schedule] = {}
        # Keyed by attempt (tenant, job id, lease token), as on PostgreSQL.
        self._running: dict[tuple[uuid.UUID, uuid.UUID, int], _Running] = {}
        self._seq = itertools.count(1)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._unsubscribe: Callable[[], None] | None = None
        subscribe = getattr(self.clock, "subscribe", None)
        if callable(subscribe):
            self._unsubscribe = subscribe(self._notify)
        self.attempts_run = 0
        """Attempts executed so far (any outcome)."""

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Nothing to open."""
        self._closed = False

    async def close(self) -> None:
        """Stop running handlers and release the thread pool for sync handlers."""
        self._closed = True
        for running in list(self._running.values()):
            running.attempt.abort(AbortReason.SHUTDOWN)
        deadline = time.monotonic() + 1.0
        while self._running and time.monotonic() < deadline:
            await self.wait_for_change(deadline - time.monotonic())
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close_now(self) -> None:
        """Synchronous close for sync teardown: flag running handlers, drop the thread pool."""
        self._closed = True
        for running in list(self._running.values()):
            running.ctx.mark_cancelled()
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                running.loop.call_soon_threadsafe(running.attempt.abort, AbortReason.SHUTDOWN)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def is_healthy(self) -> bool:
        """Always healthy: there is nothing to reach."""
        return True

    # -- change notification ----------------------------------------------------------------
    def _notify(self) -> None:
        """Wake everything waiting for a change (new job, outcome, clock move, cancel)."""
        waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                if not fut.done():
                    fut.set_result(None)
            else:
                loop.call_soon_threadsafe(_resolve, fut)

    async def wait_for_change(self, timeout: float | None = None) -> bool:
        """Wait until the runner's state changes; ``False`` when ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove((loop, fut))

    async def wait_for_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        timeout: float | None = None,
        poll_interval: float = 0.05,
    ) -> JobInfo:
        """Wait until the job is final (woken by every state change, no polling).

        Nothing runs the job unless a worker, a drain or ``eager`` does.

        Raises:
            JobTimeoutError: ``timeout`` seconds passed first (also a ``TimeoutError``).
            JobNotFoundError: no such job for the tenant.
            InvalidArgumentError: an argument is malformed.
        """
        from jobrunner._errors import JobNotFoundError

        key, tenant_id, seconds, longest = wait_arguments(job_id, tenant, timeout, poll_interval)

        async def watch() -> JobInfo:
            while True:
                info = await self.get_job_status(key, tenant=tenant_id)
                if info is None:
                    raise JobNotFoundError(f"job {key} not found")
                if info.status.is_final:
                    return info
                await self.wait_for_change(longest * 20)

        return await wait_within(watch(), key, seconds)

    # -- scheduling -------------------------------------------------------------------------
    def _job_from(self, args: JobArgs, schedule_id: uuid.UUID | None = None) -> _Job:
        now = self.clock.now()
        due = args.run_at is None or args.run_at <= now
        return _Job(
            tenant=args.tenant,
            job_id=uuid.uuid4(),
            name=args.name,
            # Stored as the database would hand them back (JSON round trip).
            data=_roundtrip(args.data),
            metadata=_roundtrip(args.metadata),
            status=JobStatus.QUEUED if due else JobStatus.PENDING,
            created_at=now,
            updated_at=now,
            user_id=args.user_id,
            queue=args.queue,
            priority=args.priority,
            run_at=now if args.run_at is None else args.run_at,
            max_attempts=args.max_attempts,
            policy=args.policy,
            seq=next(self._seq),
            singleton_key=args.singleton_key,
            schedule_id=schedule_id,
        )

    def _live_singleton(self, tenant: uuid.UUID, key: str) -> _Job | None:
        for job in self._jobs.values():
            if job.tenant == tenant and job.singleton_key == key and job.status in _LIVE:
                return job
        return None

    def _store(self, job: _Job) -> ScheduledJob:
        if job.singleton_key is not None:
            existing = self._live_singleton(job.tenant, job.singleton_key)
            if existing is not None:
                return _handle(existing, created=False)
        self._jobs[job.key] = job
        self._notify()
        return _handle(job, created=True)

    @enqueue_boundary
    @checked_options
    async def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a job now; see :meth:`JobRunner.schedule_job` (``connection`` is refused)."""
        _no_connection(options.get("connection"))
        job = self._job_from(
            enqueue_args(self.registry, self.require_registered, name, data, None, options)
        )
        handle = self._store(job)
        if self.eager and handle.created:
            await self._run_eagerly([job])
        return handle

    @enqueue_boundary
    @checked_options
    async def schedule_job_at(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a job due at ``run_at`` on the runner's clock."""
        _no_connection(options.get("connection"))
        as_aware_datetime(run_at)
        job = self._job_from(
            enqueue_args(self.registry, self.require_registered, name, data, run_at, options)
        )
        handle = self._store(job)
        if self.eager and handle.created and job.status is JobStatus.QUEUED:
            await self._run_eagerly([job])
        return handle

    @enqueue_boundary
    @checked_options
    async def schedule_jobs(
        self,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[ScheduledJob]:
        """Enqueue many jobs; all are validated before any is stored."""
        _no_connection(options.get("connection"))
        items, _ = as_bulk_data(data)
        shared = bulk_args(self.registry, self.require_registered, name, options)
        jobs = [self._job_from(replace(shared, data=as_data(item))) for item in items]
        handles = [self._store(job) for job in jobs]
        if self.eager:
            await self._run_eagerly([j for j in jobs if j.status is JobStatus.QUEUED])
        return handles

    # -- inspection and control -------------------------------------------------------------
    def _find(self, job_id: uuid.UUID | str, tenant: TenantArg) -> _Job | None:
        key = as_uuid(job_id, "job_id")
        return self._jobs.get((as_tenant(tenant), key))

    async def get_job_status(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobInfo | None:
        """The job's state, or ``None`` when this tenant has no such job."""
        job = self._find(job_id, tenant)
        return None if job is None else job.info(self.runner_type)

    async def cancel_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Cancel a live job (stopping its running handler) or remove a recurring schedule."""
        job = self._find(job_id, tenant)
        reason = as_optional_text(reason, "reason")
        cancelled_by = as_optional_text(cancelled_by, "cancelled_by")
        if job is None:
            return False
        schedule = self._schedules.get(job.key)
        if schedule is not None:
            # As on PostgreSQL: the schedule goes, its tracker stays as cancelled history and
            # runs already enqueued are left alone.
            del self._schedules[job.key]
            job.status = JobStatus.CANCELLED
            job.completed_at = job.updated_at = self.clock.now()
            job.metadata.update(
                {
                    "paused": False,
                    "next_run_at": None,
                    "schedule_removed": True,
                    "removed_at": self.clock.now().isoformat(),
                }
            )
            extra = {"cancel_reason": reason, "cancelled_by": cancelled_by}
            job.metadata.update({k: v for k, v in extra.items() if v is not None})
            self._notify()
            return True
        if job.status not in _LIVE:
            return False
        previous = job.status
        now = self.clock.now()
        job.status = JobStatus.CANCELLED
        job.completed_at = job.updated_at = now
        job.error = JobError(type="cancelled", message=reason or "cancelled", traceback=None)
        extra = {"cancel_reason": reason, "cancelled_by": cancelled_by}
        job.metadata.update({k: v for k, v in extra.items() if v is not None})
        if previous is JobStatus.PROCESSING:
            job.details.append(
                _Detail(
                    uuid.uuid4(),
                    "attempt",
                    JobStatus.CANCELLED,
                    None,
                    now,
                    job.attempts,
                    {
                        k: v
                        for k, v in {"reason": reason, "cancelled_by": cancelled_by}.items()
                        if v is not None
                    },
                )
            )
            job.lease_token += 1  # fences the cancelled attempt, as on PostgreSQL
            for running in list(self._running.values()):
                if running.job is job and running.ctx.lease_token < job.lease_token:
                    running.attempt.abort(AbortReason.CANCELLED)
        self._notify()
        return True

    async def retry_job(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Queue a failed or cancelled job again with a fresh attempt count."""
        job = self._find(job_id, tenant)
        if job is None or job.tracker:
            return False
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return False
        if job.singleton_key is not None and self._live_singleton(job.tenant, job.singleton_key):
            return False
        now = self.clock.now()
        job.details.append(
            _Detail(
                uuid.uuid4(),
                "retry",
                JobStatus.QUEUED,
                None if job.error is None else job.error.to_json(),
                now,
                job.attempts,
                {
                    "previous_status": job.status.value,
                    **{
                        k: job.metadata[k]
                        for k in ("cancel_reason", "cancelled_by")
                        if job.metadata.get(k) is not None
                    },
                },
            )
        )
        for key in ("cancel_reason", "cancelled_by", "cancelled_at"):
            job.metadata.pop(key, None)  # the cancel belonged to the previous run
        job.metadata["retried_count"] = int(job.metadata.get("retried_count") or 0) + 1
        job.metadata["last_retried_at"] = now.isoformat()
        job.status = JobStatus.QUEUED
        job.attempts = 0
        job.error = None
        job.result = None
        job.progress = 0
        job.progress_message = None
        job.run_at = now
        job.started_at = None
        job.completed_at = None
        job.updated_at = now
        self._notify()
        return True

    async def get_job_details(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobDetails | None:
        """The job with its data and every attempt and step row, oldest first."""
        job = self._find(job_id, tenant)
        if job is None:
            return None
        steps = sorted(job.details, key=lambda d: d.processed_at)
        return JobDetails(
            job=job.info(self.runner_type),
            data=_roundtrip(job.data),
            steps=[d.info() for d in steps],
        )

    def _scoped(self, tenant: TenantArg | AllTenants) -> list[_Job]:
        if tenant is ALL_TENANTS:
            return list(self._jobs.values())
        tenant_id = as_tenant(tenant)
        return [j for j in self._jobs.values() if j.tenant == tenant_id]

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
        """Jobs newest first, filtered, with an opaque cursor for the next page."""
        f = list_filters(
            tenant=tenant,
            status=status,
            name=name,
            runner_type=runner_type,
            created_after=created_after,
            created_before=created_before,
            search=search,
            limit=limit,
        )
        statuses = None if f.statuses is None else {JobStatus(s) for s in f.statuses}
        after_seq = _decode_cursor(cursor)
        jobs = sorted(self._scoped(tenant), key=lambda j: (j.created_at, j.seq), reverse=True)
        picked: list[_Job] = []
        for job in jobs:
            if after_seq is not None and (job.created_at, job.seq) >= after_seq:
                continue
            if statuses is not None and job.status not in statuses:
                continue
            if name is not None and job.name != name:
                continue
            if runner_type is not None and runner_type != self.runner_type:
                continue
            if created_after is not None and job.created_at < created_after:
                continue
            if created_before is not None and job.created_at >= created_before:
                continue
            if search and not _matches(job, search):
                continue
            picked.append(job)
            if len(picked) > limit:
                break
        more = len(picked) > limit
        page = picked[:limit]
        next_cursor = _encode_cursor(page[-1]) if more and page else None
        return JobPage(jobs=[j.info(self.runner_type) for j in page], next_cursor=next_cursor)

    async def get_metrics(self, *, tenant: TenantArg | AllTenants = None) -> Metrics:
        """Counts by status, rates, throughput over the last hour and queue age."""
        jobs = self._scoped(tenant)
        now = self.clock.now()
        by_status = {s.value: 0 for s in JobStatus}
        for job in jobs:
            by_status[job.status.value] += 1
        completed = by_status[JobStatus.COMPLETED.value]
        failed = by_status[JobStatus.FAILED.value]
        minute0 = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
        buckets = {minute0 + timedelta(minutes=i): 0 for i in range(60)}
        for job in jobs:
            if job.status is JobStatus.COMPLETED and job.completed_at is not None:
                minute = job.completed_at.replace(second=0, microsecond=0)
                if minute in buckets:
                    buckets[minute] += 1
        queued = [j.run_at for j in jobs if j.status is JobStatus.QUEUED]
        return Metrics(
            by_status=by_status,
            total=len(jobs),
            failed_last_24h=sum(
                1
                for j in jobs
                if j.status is JobStatus.FAILED
                and j.completed_at is not None
                and j.completed_at >= now - timedelta(hours=24)
            ),
            success_rate=None if completed + failed == 0 else completed / (completed + failed),
            by_runner_type={self.runner_type: len(jobs)} if jobs else {},
            throughput_per_minute=sorted(buckets.items()),
            oldest_queued_age_seconds=(
                max((now - min(queued)).total_seconds(), 0.0) if queued else None
            ),
        )

    async def clear_history(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        scope: HistoryScope = "finished",
        older_than: timedelta | float | None = None,
    ) -> int:
        """Delete final jobs (``scope='finished'``: completed only; ``'all'``: every final one)."""
        if not isinstance(scope, str) or scope not in ("finished", "all"):
            raise InvalidArgumentError("scope must be 'finished' or 'all'")
        tenant_scope = tenant if isinstance(tenant, AllTenants) else as_tenant(tenant)
        age = as_history_age(older_than)
        cutoff = None
        if age is not None:
            try:
                cutoff = self.clock.now() - timedelta(seconds=age)
            except OverflowError:
                return 0  # the clock is so early that nothing can be that old
        wanted = {JobStatus.COMPLETED} if scope == "finished" else set(_FINAL)
        doomed = [
            j
            for j in self._scoped(tenant_scope)
            if j.status in wanted
            and not (j.tracker and j.key in self._schedules)
            and (cutoff is None or (j.completed_at or j.created_at) < cutoff)
        ]
        for job in doomed:
            del self._jobs[job.key]
        if doomed:
            self._notify()
        return len(doomed)

    # -- recurring --------------------------------------------------------------------------
    @checked_options
    async def schedule_recurring_job(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        expression: str,
        **options: Unpack[RecurringOptions],
    ) -> ScheduledJob:
        """Create or update (by ``singleton_key``) a schedule ticking on the runner's clock.

        As on PostgreSQL: an update keeps the schedule's id, paused state and next tick unless
        the expression or timezone changed, which recomputes the next tick from now.
        """
        args = recurring_args(
            self.registry, self.require_registered, name, data, expression, **options
        )
        rec, missed, overlap_policy = args.recurrence, args.missed_ticks, args.overlap
        catch_up = args.max_catch_up
        template = self._job_from(args.job)
        now = self.clock.now()
        key = args.job.singleton_key or f"{template.name}:{template.tenant}"
        existing = next(
            (
                s
                for s in self._schedules.values()
                if s.tracker.tenant == template.tenant and s.key == key
            ),
            None,
        )
        if existing is not None:
            tracker = existing.tracker
            same_timing = (existing.rec.expression, existing.rec.timezone) == (
                rec.expression,
                rec.timezone,
            )
            existing.name = template.name
            existing.data = template.data
            existing.user_metadata = template.metadata
            existing.priority, existing.queue = template.priority, template.queue
            existing.user_id, existing.max_attempts = template.user_id, template.max_attempts
            existing.policy = template.policy
            existing.missed_ticks, existing.overlap = missed, overlap_policy
            existing.max_catch_up = catch_up
            if not same_timing:
                existing.rec = rec
                existing.next_run_at = rec.next_after(now)
            self._sync_tracker(existing)
            self._notify()
            return _handle(tracker, created=False)
        template.status = JobStatus.ACTIVE
        template.singleton_key = key
        template.tracker = True
        schedule = _Schedule(
            tracker=template,
            key=key,
            rec=rec,
            name=template.name,
            data=template.data,
            user_metadata=template.metadata,
            priority=template.priority,
            queue=template.queue,
            user_id=template.user_id,
            max_attempts=template.max_attempts,
            policy=template.policy,
            missed_ticks=missed,
            overlap=overlap_policy,
            max_catch_up=catch_up,
            next_run_at=rec.next_after(now),
        )
        self._jobs[template.key] = template
        self._schedules[template.key] = schedule
        self._sync_tracker(schedule)
        self._notify()
        return _handle(template, created=True)

    def _sync_tracker(self, schedule: _Schedule) -> None:
        """Mirror the schedule onto its tracker row, as the PostgreSQL backend does."""
        tracker = schedule.tracker
        tracker.name, tracker.data = schedule.name, schedule.data
        tracker.priority, tracker.queue = schedule.priority, schedule.queue
        tracker.user_id, tracker.max_attempts = schedule.user_id, schedule.max_attempts
        tracker.run_at = schedule.next_run_at
        tracker.updated_at = self.clock.now()
        meta = dict(schedule.user_metadata)
        meta.update(
            {
                "recurring": True,
                "schedule_id": str(tracker.job_id),
                "singleton_key": schedule.key,
                "expression": schedule.rec.expression,
                "timezone": schedule.rec.timezone,
                "kind": schedule.rec.kind,
                "missed_ticks": schedule.missed_ticks.value,
                "overlap": schedule.overlap.value,
                "max_catch_up": schedule.max_catch_up,
                "paused": schedule.paused,
                "next_run_at": None if schedule.paused else _iso(schedule.next_run_at),
                "last_run_at": _iso(schedule.last_run_at),
                "last_job_id": None if schedule.last_job_id is None else str(schedule.last_job_id),
                "skipped_ticks": schedule.skipped_ticks,
            }
        )
        tracker.metadata = meta

    async def list_schedules(self, *, tenant: TenantArg = None) -> list[ScheduleInfo]:
        """The tenant's schedules (paused ones too), by name."""
        tenant_id = as_tenant(tenant)
        found = [s for s in self._schedules.values() if s.tracker.tenant == tenant_id]
        found.sort(key=lambda s: (s.name, s.key))
        return [self._schedule_info(s) for s in found]

    def _schedule_info(self, schedule: _Schedule) -> ScheduleInfo:
        last = None
        if schedule.last_job_id is not None:
            last_job = self._jobs.get((schedule.tracker.tenant, schedule.last_job_id))
            last = None if last_job is None else last_job.status
        tracker = schedule.tracker
        return ScheduleInfo(
            job_id=tracker.job_id,
            tenant=tracker.tenant,
            name=schedule.name,
            expression=schedule.rec.expression,
            timezone=schedule.rec.timezone,
            singleton_key=schedule.key,
            data=_roundtrip(schedule.data),
            paused=schedule.paused,
            next_run_at=None if schedule.paused else schedule.next_run_at,
            last_run_at=schedule.last_run_at,
            last_run_status=last,
            last_job_id=schedule.last_job_id,
            missed_ticks=schedule.missed_ticks,
            overlap=schedule.overlap,
            runner_type=self.runner_type,
        )

    def _schedule_of(self, job_id: uuid.UUID | str, tenant: TenantArg) -> _Schedule | None:
        job = self._find(job_id, tenant)
        return None if job is None else self._schedules.get(job.key)

    async def pause_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Pause a schedule; no tick fires until it is resumed."""
        schedule = self._schedule_of(job_id, tenant)
        if schedule is None:
            return False
        schedule.paused = True
        self._sync_tracker(schedule)
        self._notify()
        return True

    async def resume_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Resume from the first tick after now (ticks that fell while paused never fire)."""
        schedule = self._schedule_of(job_id, tenant)
        if schedule is None:
            return False
        if schedule.paused:
            schedule.paused = False
            now = self.clock.now()
            if schedule.next_run_at <= now:
                schedule.next_run_at = schedule.rec.next_after(now, anchor=schedule.next_run_at)
            self._sync_tracker(schedule)
        self._notify()
        return True

    def fire_due_schedules(self) -> list[ScheduledJob]:
        """Enqueue a job for every schedule tick due on the clock; returns their handles.

        Follows the PostgreSQL scheduler: :func:`~jobrunner._recurrence.plan_ticks` applies the
        missed-tick policy, and ``overlap='skip'`` fires nothing while a run is live (and only
        the latest tick of a catch-up burst). :func:`adrain` and workers call this.
        """
        now = self.clock.now()
        fired: list[ScheduledJob] = []
        for schedule in list(self._schedules.values()):
            if schedule.paused or schedule.next_run_at > now:
                continue
            plan = plan_ticks(
                schedule.rec,
                next_run_at=schedule.next_run_at,
                now=now,
                policy=schedule.missed_ticks,
                max_catch_up=schedule.max_catch_up,
                grace=DEFAULT_MISFIRE_GRACE,
            )
            fire_times = list(plan.fire_times)
            skipped = plan.skipped
            if fire_times and schedule.overlap is OverlapPolicy.SKIP:
                if self._has_live_run(schedule):
                    skipped += len(fire_times)
                    fire_times = []
                elif len(fire_times) > 1:
                    skipped += len(fire_times) - 1
                    fire_times = fire_times[-1:]
            for tick in fire_times:
                fired.append(self._fire(schedule, tick))
            schedule.skipped_ticks += skipped
            schedule.next_run_at = plan.next_run_at
            self._sync_tracker(schedule)
        if fired:
            self._notify()
        return fired

    def _has_live_run(self, schedule: _Schedule) -> bool:
        tracker = schedule.tracker
        return any(
            j.tenant == tracker.tenant and j.schedule_id == tracker.job_id and j.status in _LIVE
            for j in self._jobs.values()
        )

    def _fire(self, schedule: _Schedule, tick: datetime) -> ScheduledJob:
        tracker = schedule.tracker
        now = self.clock.now()
        job = _Job(
            tenant=tracker.tenant,
            job_id=uuid.uuid4(),
            name=schedule.name,
            data=_roundtrip(schedule.data),
            metadata={
                **schedule.user_metadata,
                "schedule_id": str(tracker.job_id),
                "scheduled_for": _iso(tick),
            },
            status=JobStatus.QUEUED if tick <= now else JobStatus.PENDING,
            created_at=now,
            updated_at=now,
            user_id=schedule.user_id,
            queue=schedule.queue,
            priority=schedule.priority,
            run_at=tick,
            max_attempts=schedule.max_attempts,
            policy=schedule.policy,
            seq=next(self._seq),
            schedule_id=tracker.job_id,
        )
        self._jobs[job.key] = job
        schedule.last_run_at = tick
        schedule.last_job_id = job.job_id
        return _handle(job, created=True)

    # -- execution --------------------------------------------------------------------------
    def due_jobs(self, queues: Sequence[str] | None = None) -> list[_Job]:
        """Jobs a worker would claim now, in claim order (priority, due time, age)."""
        now = self.clock.now()
        due = [
            j
            for j in self._jobs.values()
            if j.status in _CLAIMABLE
            and j.run_at <= now
            and not self._is_running(j)
            and (queues is None or j.queue in queues)
        ]
        due.sort(key=lambda j: (-j.priority, j.run_at, j.seq))
        return due

    def next_due_at(self, *, retries_only: bool = False) -> datetime | None:
        """When the next waiting job (or only retry) becomes due, or ``None``."""
        times = [
            j.run_at
            for j in self._jobs.values()
            if j.status in _CLAIMABLE
            and not self._is_running(j)
            and (not retries_only or j.status is JobStatus.RETRYING)
        ]
        return min(times) if times else None

    def next_tick_at(self) -> datetime | None:
        """When the next unpaused schedule tick comes, or ``None``."""
        times = [
            s.next_run_at
            for s in self._schedules.values()
            if not s.paused and s.next_run_at is not None
        ]
        return min(times) if times else None

    def make_retries_due(self) -> int:
        """Move every waiting retry's ``run_at`` to now (drain on a real clock)."""
        now = self.clock.now()
        moved = 0
        for job in self._jobs.values():
            if job.status is JobStatus.RETRYING and job.run_at > now:
                job.run_at = now
                moved += 1
        if moved:
            self._notify()
        return moved

    @property
    def running_count(self) -> int:
        """Attempts executing right now (in any worker, drain or eager call)."""
        return len(self._running)

    def _is_running(self, job: _Job) -> bool:
        return (job.tenant, job.job_id, job.lease_token) in self._running

    def claim(self, job: _Job) -> _Running:
        """Mark ``job`` processing (a new attempt with a new lease token)."""
        now = self.clock.now()
        job.status = JobStatus.PROCESSING
        job.attempts += 1
        job.lease_token += 1
        job.started_at = now
        job.updated_at = now
        if job.policy is None:  # pinned by the first claim, as on PostgreSQL
            spec = self.registry.find(job.name)
            job.policy = spec.policy if spec is not None else JobPolicy()
            job.max_attempts = job.policy.retry.max_attempts
        ctx = JobContext(
            job_id=job.job_id,
            name=job.name,
            tenant=job.tenant,
            attempt=job.attempts,
            max_attempts=job.policy.retry.max_attempts,
            queue=job.queue,
            metadata=_roundtrip(job.metadata),
            schedule_id=job.schedule_id,
            lease_token=job.lease_token,
            _sink=_MemorySink(self),
        )
        running = _Running(
            job, Attempt(ctx, _roundtrip(job.data), job.policy), asyncio.get_running_loop()
        )
        running.attempt.due_at = job.run_at.timestamp()
        self._running[running.key] = running
        self.attempts_run += 1
        self._notify()
        return running

    async def execute(self, running: _Running) -> None:
        """Run one claimed attempt and record its outcome (fenced by the lease token)."""
        job, attempt = running.job, running.attempt
        started_at = self.clock.now()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="jobrunner-mem")
        try:
            outcome = await run_attempt(
                attempt,
                self.registry.find(job.name),
                executor=self._executor,
                rand=self.rand,
                runner_type=self.runner_type,
            )
            if isinstance(outcome, Failed):
                self._record_failure(
                    running, outcome.error, outcome.retry_in, started_at, attempt.started
                )
            elif isinstance(outcome, Completed) and self._holds_lease(running):
                now = self.clock.now()
                job.status = JobStatus.COMPLETED
                job.result = outcome.result
                job.error = None
                job.progress = 100
                job.completed_at = job.updated_at = now
                job.details.append(
                    _Detail(
                        uuid.uuid4(),
                        "attempt",
                        JobStatus.COMPLETED,
                        None,
                        now,
                        job.attempts,
                        _attempt_meta(started_at, attempt.started),
                    )
                )
            # Aborted: a cancel or a shutdown re-queue already recorded what happened.
        finally:
            if self._running.get(running.key) is running:
                del self._running[running.key]
            self._notify()

    def _holds_lease(self, running: _Running) -> bool:
        job = running.job
        return job.status is JobStatus.PROCESSING and job.lease_token == running.ctx.lease_token

    def _record_failure(
        self,
        running: _Running,
        error: JobError,
        retry_in: float | None,
        started_at: datetime,
        started: float,
    ) -> None:
        if not self._holds_lease(running):
            return
        job = running.job
        now = self.clock.now()
        job.error = error
        job.updated_at = now
        meta = _attempt_meta(started_at, started)
        if retry_in is None:
            job.status = JobStatus.FAILED
            job.completed_at = now
            meta["next_run_at"] = None
        else:
            job.status = JobStatus.RETRYING
            job.run_at = now + timedelta(seconds=retry_in)
            meta["next_run_at"] = job.run_at.isoformat()
        job.details.append(
            _Detail(
                uuid.uuid4(), "attempt", JobStatus.FAILED, error.to_json(), now, job.attempts, meta
            )
        )

    async def run_next(self, queues: Sequence[str] | None = None) -> bool:
        """Claim and run the next due job to the end of its attempt; ``False`` if none."""
        self.fire_due_schedules()
        due = self.due_jobs(queues)
        if not due:
            return False
        await self.execute(self.claim(due[0]))
        return True

    async def _run_eagerly(self, jobs: list[_Job]) -> None:
        """Run ``jobs`` now, retries included, jumping a fake clock over their backoff."""
        for job in jobs:
            while job.status in _CLAIMABLE and not self._is_running(job):
                now = self.clock.now()
                if job.run_at > now:
                    if isinstance(self.clock, FakeClock):
                        self.clock.set(job.run_at)
                    else:
                        job.run_at = now
                await self.execute(self.claim(job))

    # -- workers ----------------------------------------------------------------------------
    def create_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> MemoryWorker:
        """A worker that runs due jobs continuously (options: ``shutdown_grace``)."""
        unknown = set(options) - {"shutdown_grace"}
        if unknown:
            raise InvalidArgumentError(f"unknown worker options: {', '.join(sorted(unknown))}")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise InvalidArgumentError("concurrency must be a positive integer")
        if isinstance(queues, str):
            raise InvalidArgumentError("queues must be a sequence of names, not a string")
        return MemoryWorker(
            self,
            concurrency=concurrency or 10,
            queues=None if queues is None else tuple(queues),
            shutdown_grace=float(options.get("shutdown_grace", 30.0)),
        )


class MemoryWorker(JobWorker):
    """Runs an :class:`InMemoryJobRunner`'s due jobs until stopped.

    On a :class:`FakeClock` it runs what is due on that clock and waits for the clock to move;
    on a :class:`SystemClock` it sleeps until the next due time.
    """

    def __init__(
        self,
        runner: InMemoryJobRunner,
        *,
        concurrency: int,
        queues: tuple[str, ...] | None,
        shutdown_grace: float,
    ) -> None:
        self.runner = runner
        self.concurrency = concurrency
        self.queues = queues
        self.shutdown_grace = shutdown_grace
        self._started = asyncio.Event()
        self._stopping = False
        self._grace: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._owned: dict[asyncio.Task[None], _Running] = {}

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._owned.pop(task, None)

    @property
    def started(self) -> asyncio.Event:
        """Set once the worker is consuming."""
        return self._started

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop claiming; running jobs get ``grace`` seconds, then go back to the queue."""
        self._grace = self.shutdown_grace if grace is None else grace
        self._stopping = True
        self.runner._notify()

    async def run(self) -> None:
        """Run due jobs until :meth:`stop`."""
        self._started.set()
        try:
            while not self._stopping:
                self.runner.fire_due_schedules()
                free = self.concurrency - len(self._tasks)
                claimed = 0
                if free > 0:
                    for job in self.runner.due_jobs(self.queues)[:free]:
                        running = self.runner.claim(job)
                        task = asyncio.create_task(self.runner.execute(running))
                        self._tasks.add(task)
                        self._owned[task] = running
                        task.add_done_callback(self._forget)
                        claimed += 1
                if claimed:
                    await asyncio.sleep(0)
                    continue
                await self.runner.wait_for_change(self._idle_delay())
        finally:
            await self._shutdown()

    def _idle_delay(self) -> float | None:
        if not isinstance(self.runner.clock, SystemClock):
            return 1.0  # a fake clock announces its moves; this is only a safety net
        nexts = [t for t in (self.runner.next_due_at(), self.runner.next_tick_at()) if t]
        if not nexts:
            return 1.0
        return min(max((min(nexts) - self.runner.clock.now()).total_seconds(), 0.001), 1.0)

    async def _shutdown(self) -> None:
        grace = self.shutdown_grace if self._grace is None else self._grace
        pending = set(self._tasks)
        if pending and grace > 0:
            _done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            running = self._owned.get(task)
            if running is not None and self.runner._holds_lease(running):
                job = running.job
                # Give the attempt back like the PostgreSQL worker's release: queued again.
                job.status = JobStatus.QUEUED
                job.attempts = max(job.attempts - 1, 0)
                job.lease_token += 1
                job.run_at = self.runner.clock.now()
                running.ctx.mark_cancelled()
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        self.runner._notify()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _handle(job: _Job, *, created: bool) -> ScheduledJob:
    return ScheduledJob(
        job_id=job.job_id, external_id=str(job.job_id), tenant=job.tenant, created=created
    )


def _no_connection(connection: Any) -> None:
    if connection is not None:
        raise InvalidArgumentError(
            "InMemoryJobRunner has no database: schedule without connection= "
            "(transactional enqueue needs the PostgreSQL runner)"
        )


def _attempt_meta(started_at: datetime, started: float) -> dict[str, Any]:
    return {
        "started_at": started_at.isoformat(),
        "duration_ms": round((time.monotonic() - started) * 1000, 3),
        "worker_id": "memory",
    }


def _matches(job: _Job, search: str) -> bool:
    """As PostgreSQL's list_jobs: name, id, error message or error type (case-insensitive)."""
    needle = search.lower()
    fields = [job.name, str(job.job_id)]
    if job.error is not None:
        fields += [job.error.message, job.error.type]
    return any(needle in f.lower() for f in fields)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _encode_cursor(job: _Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.seq}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    if cursor is None:
        return None
    if not isinstance(cursor, str):
        raise InvalidArgumentError("cursor is not one this runner returned")
    try:
        stamp, seq = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), int(seq)
    except (ValueError, UnicodeDecodeError, TypeError):
        raise InvalidArgumentError("cursor is not one this runner returned") from None
