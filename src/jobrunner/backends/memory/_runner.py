"""InMemoryJobRunner: the whole JobRunner API in process memory, for fast unit tests.

The runner validates at the boundary as every backend does and keeps its data in a
:class:`~jobrunner.backends.memory._store.MemoryStore`. Its workers are the queue worker every
queue backend runs (:class:`~jobrunner._queue._worker.QueueWorker`, with the schedule ticker),
and every attempt (a worker's, a drain's or an eager one) goes through the execution core
(:func:`~jobrunner._execution.run_attempt`). Time comes from a :class:`Clock`; by default a
:class:`FakeClock` that only moves when a test moves it (or when ``adrain`` jumps over a
retry's backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Unpack, cast

from jobrunner._errors import InvalidArgumentError, JobNotFoundError
from jobrunner._execution import Aborted, AbortReason, Attempt, run_attempt
from jobrunner._filters import list_filters
from jobrunner._jobargs import (
    JobArgs,
    bulk_args,
    check_dependency_options,
    enqueue_args,
    recurring_args,
    with_data,
    with_parent,
)
from jobrunner._limits import MAX_LEASE_SECONDS
from jobrunner._models import (
    JobDetails,
    JobInfo,
    JobPage,
    JobStatus,
    Metrics,
    ScheduledJob,
    ScheduleInfo,
)
from jobrunner._options import BulkOptions, EnqueueOptions, RecurringOptions, checked_options
from jobrunner._queue._attempts import begin_attempt, outcome_record
from jobrunner._queue._settings import WorkerSettings
from jobrunner._queue._store import (
    CancelRequested,
    ClaimedJob,
    CompletedAttempt,
    Notice,
    OutcomeBatch,
    Topic,
)
from jobrunner._queue._worker import QueueWorker
from jobrunner._runner import (
    ALL_TENANTS,
    AllTenants,
    HistoryScope,
    JobRunner,
    TenantArg,
    wait_arguments,
    wait_within,
)
from jobrunner._telemetry import enqueue_boundary
from jobrunner._validation import (
    as_aware_datetime,
    as_bulk_data,
    as_history_age,
    as_optional_text,
    as_tenant,
    as_uuid,
)
from jobrunner.backends.memory._clock import Clock, FakeClock
from jobrunner.backends.memory._records import CLAIMABLE, FINAL, JobRecord
from jobrunner.backends.memory._store import MemoryStore
from jobrunner.backends.memory._tables import RUNNER_TYPE, JobFilter
from jobrunner.registry import JobHandlerRegistry

__all__ = ["InMemoryJobRunner", "MemoryWorker"]

#: Lease of the attempts the runner runs itself (drain, eager): nothing heartbeats them, and
#: they end within the call that started them.
_OWN_LEASE = float(MAX_LEASE_SECONDS)
#: The worker options an in-memory runner takes besides ``concurrency`` and ``queues``.
_WORKER_OPTIONS = frozenset({"shutdown_grace"})


class MemoryWorker(QueueWorker):
    """The queue worker on an :class:`InMemoryJobRunner`'s store.

    On a :class:`FakeClock` it runs what is due on that clock and wakes when the clock moves;
    on a :class:`SystemClock` it sleeps until the next due time.
    """

    def __init__(
        self, store: MemoryStore, registry: JobHandlerRegistry, settings: WorkerSettings
    ) -> None:
        super().__init__(store, registry, settings)
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop it runs on (a synchronous close stops it there)."""

    async def run(self) -> None:
        """Run due jobs until :meth:`stop`."""
        self.loop = asyncio.get_running_loop()
        await super().run()


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

    runner_type = RUNNER_TYPE

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
        self.store = MemoryStore(self.clock)
        self.store.scheduler = self.schedule_child
        self._workers: weakref.WeakSet[MemoryWorker] = weakref.WeakSet()
        # Attempts this runner runs itself (drain, eager), keyed by (job id, lease token).
        self._own: dict[tuple[uuid.UUID, int], tuple[Attempt, asyncio.AbstractEventLoop]] = {}
        self._own_worker_id = uuid.uuid4()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def attempts_run(self) -> int:
        """Attempts executed so far (any outcome)."""
        return self.store.attempts_run

    @property
    def _jobs(self) -> dict[tuple[uuid.UUID, uuid.UUID], JobRecord]:
        """Every job row by ``(tenant, job_id)`` (the testing helpers read them)."""
        return self.store.jobs

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Nothing to open."""
        self._closed = False

    async def close(self) -> None:
        """Stop running handlers and workers; release the thread pool for sync handlers."""
        self._closed = True
        for attempt, _loop in list(self._own.values()):
            attempt.abort(AbortReason.SHUTDOWN)
        for worker in list(self._workers):
            await worker.stop(grace=0)
        deadline = time.monotonic() + 1.0
        while (self._own or self.store.running_count) and time.monotonic() < deadline:
            await self.store.wait_for_change(deadline - time.monotonic())
        self._drop_executor()

    def close_now(self) -> None:
        """Synchronous close for sync teardown: stop handlers and workers, drop the pool."""
        self._closed = True
        for attempt, loop in list(self._own.values()):
            attempt.ctx.mark_cancelled()
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                loop.call_soon_threadsafe(attempt.abort, AbortReason.SHUTDOWN)
        for worker in list(self._workers):
            if worker.loop is not None and not worker.loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(worker.stop(grace=0), worker.loop)
        self._drop_executor()

    def _drop_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def is_healthy(self) -> bool:
        """Always healthy: there is nothing to reach."""
        return True

    # -- change notification ----------------------------------------------------------------
    async def wait_for_change(self, timeout: float | None = None) -> bool:
        """Wait until the runner's state changes; ``False`` when ``timeout`` passed first."""
        return await self.store.wait_for_change(timeout)

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
        key, tenant_id, seconds, longest = wait_arguments(job_id, tenant, timeout, poll_interval)

        async def watch() -> JobInfo:
            while True:
                info = self.store.info(tenant_id, key)
                if info is None:
                    raise JobNotFoundError(f"job {key} not found")
                if info.status.is_final:
                    return info
                await self.store.wait_for_change(longest * 20)

        return await wait_within(watch(), key, seconds)

    # -- scheduling -------------------------------------------------------------------------
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
        return await self._enqueue(
            enqueue_args(self.registry, self.require_registered, name, data, None, options)
        )

    async def _enqueue(self, args: JobArgs) -> ScheduledJob:
        if args.depends_on:
            self.store.check_dependencies(args)
            job = self.store.new_job(args)
            handle = self.store.add_dependent(job, args)
        else:
            check_dependency_options(args)
            job = self.store.new_job(args)
            handle = self.store.add(job)
        if self.eager and handle.created and job.status is JobStatus.QUEUED:
            await self._run_eagerly([job])
        return handle

    async def schedule_child(
        self,
        ctx: Any,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """``ctx.schedule_job``: a job of the handler's tenant recording its parent."""
        if run_at is not None:
            as_aware_datetime(run_at)
        args = enqueue_args(
            self.registry,
            self.require_registered,
            name,
            data,
            run_at,
            cast(EnqueueOptions, {"tenant": ctx.tenant, **options}),
        )
        return await self._enqueue(with_parent(args, ctx.tenant, ctx.job_id))

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
        return await self._enqueue(
            enqueue_args(self.registry, self.require_registered, name, data, run_at, options)
        )

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
        if shared.depends_on:
            self.store.check_dependencies(shared)
        else:
            check_dependency_options(shared)
        each = [with_data(shared, item) for item in items]
        jobs = [self.store.new_job(args) for args in each]
        if shared.depends_on:
            handles = [
                self.store.add_dependent(job, args) for job, args in zip(jobs, each, strict=True)
            ]
        else:
            handles = [self.store.add(job) for job in jobs]
        if self.eager:
            await self._run_eagerly([j for j in jobs if j.status is JobStatus.QUEUED])
        return handles

    # -- inspection and control -------------------------------------------------------------
    async def get_job_status(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobInfo | None:
        """The job's state, or ``None`` when this tenant has no such job."""
        key = as_uuid(job_id, "job_id")
        return self.store.info(as_tenant(tenant), key)

    async def cancel_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Cancel a live job (stopping its running handler) or remove a recurring schedule."""
        key = as_uuid(job_id, "job_id")
        tenant_id = as_tenant(tenant)
        reason = as_optional_text(reason, "reason")
        cancelled_by = as_optional_text(cancelled_by, "cancelled_by")
        return self.store.cancel(tenant_id, key, reason=reason, cancelled_by=cancelled_by)

    async def retry_job(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Queue a failed or cancelled job again with a fresh attempt count."""
        key = as_uuid(job_id, "job_id")
        return self.store.retry(as_tenant(tenant), key)

    async def get_job_details(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobDetails | None:
        """The job with its data and every attempt and step row, oldest first."""
        key = as_uuid(job_id, "job_id")
        return self.store.details(as_tenant(tenant), key)

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
        where = JobFilter(
            tenant=f.tenant,
            statuses=None if f.statuses is None else frozenset(JobStatus(s) for s in f.statuses),
            name=f.name,
            runner_type=f.runner_type,
            created_after=f.created_after,
            created_before=f.created_before,
            search=f.search,
        )
        return self.store.list_jobs(where, limit=f.limit, cursor=cursor)

    async def get_metrics(self, *, tenant: TenantArg | AllTenants = None) -> Metrics:
        """Counts by status, rates, throughput over the last hour and queue age."""
        return self.store.metrics(None if tenant is ALL_TENANTS else as_tenant(tenant))

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
        tenant_id = None if isinstance(tenant, AllTenants) else as_tenant(tenant)
        age = as_history_age(older_than)
        cutoff = None
        if age is not None:
            try:
                cutoff = self.clock.now() - timedelta(seconds=age)
            except OverflowError:
                return 0  # the clock is so early that nothing can be that old
        statuses = frozenset({JobStatus.COMPLETED}) if scope == "finished" else FINAL
        return self.store.clear_history(tenant_id, statuses=statuses, cutoff=cutoff)

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
        return self.store.save_schedule(args)

    async def list_schedules(self, *, tenant: TenantArg = None) -> list[ScheduleInfo]:
        """The tenant's schedules (paused ones too), by name."""
        return self.store.list_schedules(as_tenant(tenant))

    async def pause_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Pause a schedule; no tick fires until it is resumed."""
        key = as_uuid(job_id, "job_id")
        return self.store.set_schedule_paused(as_tenant(tenant), key, True)

    async def resume_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Resume from the first tick after now (ticks that fell while paused never fire)."""
        key = as_uuid(job_id, "job_id")
        return self.store.set_schedule_paused(as_tenant(tenant), key, False)

    def fire_due_schedules(self) -> list[ScheduledJob]:
        """Enqueue a job for every schedule tick due on the clock; returns their handles.

        The same decision as every store's (``jobrunner._queue._ticks``): the missed-tick
        policy, and ``overlap='skip'`` fires nothing while a run is live (and only the latest
        tick of a catch-up burst). :func:`adrain` and the workers' schedule ticker fire too.
        """
        return [
            ScheduledJob(job_id=job_id, external_id=str(job_id), tenant=fired.tenant)
            for fired in self.store.fire_due()
            for job_id, _tick in fired.jobs
        ]

    # -- what is due (for drains) -----------------------------------------------------------
    def next_due_at(self, *, retries_only: bool = False) -> datetime | None:
        """When the next waiting job (or only retry) becomes due, or ``None``."""
        return self.store.next_due_at(retries_only=retries_only)

    def next_tick_at(self) -> datetime | None:
        """When the next unpaused schedule tick comes, or ``None``."""
        return self.store.next_tick_at()

    def make_retries_due(self) -> int:
        """Move every waiting retry's ``run_at`` to now (drain on a real clock)."""
        return self.store.make_retries_due()

    @property
    def running_count(self) -> int:
        """Attempts executing right now (in any worker, drain or eager call)."""
        return self.store.running_count

    # -- running attempts itself --------------------------------------------------------------
    async def run_next(self, queues: Sequence[str] | None = None) -> bool:
        """Claim and run the next due job to the end of its attempt; ``False`` if none."""
        self.store.fire_due()
        wanted = None if queues is None else tuple(queues)
        claimed = self.store.claim_due(self._own_worker_id, wanted, 1, _OWN_LEASE)
        if not claimed:
            return False
        await self._run_claimed(claimed[0])
        return True

    async def _run_eagerly(self, jobs: list[JobRecord]) -> None:
        """Run ``jobs`` now, retries included, jumping a fake clock over their backoff."""
        for job in jobs:
            while job.status in CLAIMABLE:
                now = self.clock.now()
                if job.run_at > now:
                    if isinstance(self.clock, FakeClock):
                        self.clock.set(job.run_at)
                    else:
                        job.run_at = now
                claimed = self.store.take(job, self._own_worker_id, _OWN_LEASE)
                await self._run_claimed(claimed)

    async def _run_claimed(self, job: ClaimedJob) -> None:
        """Run one attempt through the execution core and record it, as a worker would."""
        attempt, spec = begin_attempt(job, self.registry, self.store)
        key = job.ref.key
        self._own[key] = (attempt, asyncio.get_running_loop())
        stop_listening = self.store.add_listener(frozenset({Topic.CANCELS}), self._on_cancel)
        try:
            if job.policy is None:
                await self.store.pin_policy(job.ref, attempt.policy)
            outcome = await run_attempt(
                attempt,
                spec,
                executor=self._pool(),
                rand=self.rand,
                runner_type=self.runner_type,
            )
            record = outcome_record(job.ref, attempt, outcome)
            if isinstance(record, CompletedAttempt):
                batch = OutcomeBatch(completed=[record])
            elif record is not None:
                batch = OutcomeBatch(failed=[record])
            elif isinstance(outcome, Aborted) and outcome.reason is AbortReason.SHUTDOWN:
                await self.store.release([job.ref])
                return
            else:
                return  # cancelled: the cancel recorded it
            await self.store.record_outcomes(
                batch, worker_id=self._own_worker_id, per_statement=len(batch)
            )
        finally:
            stop_listening()
            self._own.pop(key, None)
            self.store.notify()

    def _on_cancel(self, notice: Notice) -> None:
        if isinstance(notice, CancelRequested):
            for attempt, _loop in list(self._own.values()):
                if notice.stops(attempt.ctx.job_id, attempt.ctx.lease_token):
                    attempt.abort(AbortReason.CANCELLED)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="jobrunner-mem")
        return self._executor

    # -- workers ----------------------------------------------------------------------------
    def create_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> MemoryWorker:
        """A queue worker on this runner's store (options: ``shutdown_grace``)."""
        unknown = set(options) - _WORKER_OPTIONS
        if unknown:
            raise InvalidArgumentError(f"unknown worker options: {', '.join(sorted(unknown))}")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise InvalidArgumentError("concurrency must be a positive integer")
        if isinstance(queues, str):
            raise InvalidArgumentError("queues must be a sequence of names, not a string")
        # No prefetch: it saves a database round trip per claim, and claims here cost none.
        settings = WorkerSettings.build(
            concurrency=concurrency or 10, queues=queues, rand=self.rand, prefetch=0, **options
        )
        worker = MemoryWorker(self.store, self.registry, settings)
        self._workers.add(worker)
        return worker


def _no_connection(connection: Any) -> None:
    if connection is not None:
        raise InvalidArgumentError(
            "InMemoryJobRunner has no database: schedule without connection= "
            "(transactional enqueue needs the PostgreSQL runner)"
        )
