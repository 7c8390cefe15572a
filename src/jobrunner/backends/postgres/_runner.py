"""PostgresJobRunner: the JobRunner API over the jobs table."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Unpack, cast

import psycopg

from jobrunner._db import _monitoring
from jobrunner._db._database import AutoMigrate, Database, check_auto_migrate
from jobrunner._db._errors import retry_conflicts
from jobrunner._db._migrate import STARTUP_TIMEOUT, retry_transient
from jobrunner._db._monitoring import DatabaseMonitoring
from jobrunner._db._store import JobStore
from jobrunner._errors import (
    DatabaseError,
    InvalidArgumentError,
    UnavailableError,
)
from jobrunner._jobargs import (
    JobArgs,
    bulk_args,
    check_dependency_options,
    enqueue_args,
    new_job_id,
    recurring_args,
    with_parent,
)
from jobrunner._limits import MAX_TIMEOUT_SECONDS
from jobrunner._models import (
    JobInfo,
    Metrics,
    ScheduledJob,
    ScheduleInfo,
)
from jobrunner._options import BulkOptions, EnqueueOptions, RecurringOptions, checked_options
from jobrunner._runner import AllTenants, JobRunner, TenantArg
from jobrunner._telemetry import enqueue_boundary
from jobrunner._validation import (
    as_aware_datetime,
    as_optional_text,
    as_seconds,
    as_tenant,
    as_uuid,
    bulk_items,
)
from jobrunner.backends.postgres._enqueue import (
    BulkJobs,
    enqueue_many_on,
    enqueue_many_on_sync,
    enqueue_on,
    enqueue_on_sync,
    handle,
    insert_many,
    insert_one,
    insert_one_dependent,
    run_async,
    sync_connection,
)
from jobrunner.backends.postgres._flow import FlowControl
from jobrunner.backends.postgres._store import PostgresStore
from jobrunner.backends.postgres._worker import PostgresWorker, WorkerSettings
from jobrunner.registry import JobHandlerRegistry

logger = logging.getLogger("jobrunner.postgres")


class PostgresJobRunner(DatabaseMonitoring, JobRunner):
    """The default backend: jobs live in PostgreSQL and workers claim them with SKIP LOCKED.

    Args:
        dsn: libpq connection string or URL (ignored when ``database`` is given).
        schema: Schema of the jobrunner tables.
        registry: Handler registry (default: the process-wide one).
        require_registered: Refuse to schedule names without a handler in ``registry``; turn
            off in producer-only processes that do not import the handlers.
        auto_migrate: What :meth:`start` does with the schema: ``True`` applies pending
            migrations (creating the schema); ``"check"`` changes nothing and raises
            :class:`~jobrunner.ConfigurationError` unless the schema exists and is current
            (read-only tools use it); ``False`` does neither.
        pool_size: Maximum pooled connections.
        database: An existing :class:`Database` to share.
    """

    runner_type = "postgres"

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "jobrunner",
        registry: JobHandlerRegistry | None = None,
        require_registered: bool = True,
        auto_migrate: AutoMigrate = True,
        pool_size: int = 10,
        database: Database | None = None,
    ) -> None:
        super().__init__(registry)
        auto_migrate = check_auto_migrate(auto_migrate)
        if database is None:
            if not dsn:
                raise InvalidArgumentError("PostgresJobRunner needs a dsn or a database")
            database = Database(dsn, schema=schema, max_size=pool_size)
        self.db = database
        self.store = JobStore(database)
        #: The runner's own queue store: schedule definitions and ticks (a worker gets a
        #: store of its own from :meth:`queue_store`).
        self.schedule_store = self.queue_store()
        self.require_registered = require_registered
        self.auto_migrate = auto_migrate
        self._started = False
        # Concurrent first calls start the runner once (the pool cannot be opened twice).
        self._start_lock = asyncio.Lock()

    @property
    def schema(self) -> str:
        """Schema of the jobrunner tables."""
        return self.db.schema

    @property
    def flow(self) -> FlowControl:
        """Run-time fairness and flow control (limits, rates, weights, pauses, purges)."""
        return FlowControl(self.db, self._ensure_started)

    async def flow_metrics(self, *, tenant: TenantArg | AllTenants = None) -> dict[str, Any]:
        """Flow-control figures (also in ``get_metrics().extra["flow"]``)."""
        return await self.flow.metrics(tenant=tenant)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, *, timeout: float | None = None) -> None:
        """Connect, apply or check migrations (see ``auto_migrate``) and open the pool.

        A database that cannot be reached yet (down, restarting, still starting up) is retried
        with exponential backoff (tenacity) for up to ``timeout`` seconds in total (default
        30); what waiting cannot fix (bad credentials, an unknown database, a failing
        migration, a missing schema in ``"check"`` mode) raises at once.

        Raises:
            UnavailableError: the database was still unreachable after ``timeout`` seconds.
            ConfigurationError: ``auto_migrate="check"`` and the schema is missing or behind.
        """
        bound = (
            STARTUP_TIMEOUT
            if timeout is None
            else as_seconds(timeout, "timeout", maximum=MAX_TIMEOUT_SECONDS)
        )
        if self._started:
            return
        deadline = asyncio.get_running_loop().time() + bound

        async def connect_and_migrate() -> None:
            # A bounded probe first: a connect to an unresponsive host may otherwise hang for
            # the OS's TCP timeout; the migration itself is not cut short.
            remaining = max(deadline - asyncio.get_running_loop().time(), 0.0)
            try:
                async with asyncio.timeout(min(max(remaining, 1.0), 10.0)):
                    probe = await self.db.dedicated_connection()
            except TimeoutError:
                raise UnavailableError("database unavailable: connecting timed out") from None
            await probe.close()
            await self.db.prepare_schema(self.auto_migrate)

        async with self._start_lock:
            if self._started:
                return
            await retry_transient(connect_and_migrate, timeout=bound, what="database")
            await self.db.open()
            self._started = True

    async def close(self) -> None:
        """Close the pool."""
        self._started = False
        await self.db.close()

    async def _ensure_started(self) -> None:
        if not self._started:
            await self.start()

    async def is_healthy(self) -> bool:
        """Whether the database answers."""
        try:
            await self._ensure_started()
        except Exception:  # noqa: BLE001 - health checks report, never raise
            return False
        return await self.db.ping()

    async def migrate(self) -> list[int]:
        """Apply pending migrations now; returns the versions applied."""
        return await self.db.migrate()

    # -- scheduling -------------------------------------------------------------------------
    def prepare_insert(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> dict[str, Any]:
        """Validate scheduling arguments and build the ``insert_job`` parameters.

        Raises before anything is written; shared by the async runner and its sync twin.
        """
        args = enqueue_args(self.registry, self.require_registered, name, data, run_at, options)
        check_dependency_options(args)
        return self._insert_params(args)

    def _insert_params(self, args: JobArgs) -> dict[str, Any]:
        return {
            "parent_job_id": args.parent_job_id,
            "depends_on": args.depends_on,
            "run_on_failure": args.run_on_failure,
            "tenant": args.tenant,
            "job_id": new_job_id(),
            "name": args.name,
            "metadata": args.metadata_param,
            "run_at": args.run_at,
            "user_id": args.user_id,
            "runner_type": self.runner_type,
            "external_id": None,
            "queue": args.queue,
            "priority": args.priority,
            "data": args.data_param,
            "data_json": args.data_json,  # the dependent path's statements take the text
            "max_attempts": args.max_attempts,
            "policy": args.policy_param,
            "singleton_key": args.singleton_key,
            "schedule_id": None,
            "notify": True,
            "channel": self.db.channel_jobs,
        }

    async def _insert(self, params: dict[str, Any], connection: Any) -> ScheduledJob:
        if connection is not None:
            return await enqueue_on(connection, self.db.queries, params)
        await self._ensure_started()
        if params["depends_on"]:
            return await self._insert_dependent(params)
        try:
            # Performance (docs/performance.md): no liveness round trip before the insert; a
            # dead pooled connection fails it, and it is retried on a checked one.
            return await self._insert_pooled(params, checked=False)
        except UnavailableError:
            # The first try may have committed with only its reply lost. The job id is the
            # client's, so the job's own row tells: found (in either partition, it may have
            # finished already), it is the created job; else the insert is retried, and a
            # primary-key conflict then means the first try's commit landed meanwhile.
            if await self._own_job_exists(params):
                return handle(params["job_id"], params["tenant"], created=True)
            try:
                return await self._insert_pooled(params, checked=True)
            except DatabaseError as exc:
                if _is_own_insert(exc):
                    return handle(params["job_id"], params["tenant"], created=True)
                raise

    async def _insert_dependent(self, params: dict[str, Any]) -> ScheduledJob:
        """A job with dependencies, in its own transaction (the dependencies stay locked until
        it commits), run again after losing a race with a dependency moving to jobs_finished.
        A lost reply is answered like :meth:`_insert`'s: the job's own row tells."""

        async def write() -> ScheduledJob:
            async with self.db.transaction() as conn:
                return await run_async(conn, insert_one_dependent(self.db.queries, params))

        try:
            return await retry_conflicts(write)
        except UnavailableError:
            if await self._own_job_exists(params):
                return handle(params["job_id"], params["tenant"], created=True)
            raise

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
        args = with_parent(args, ctx.tenant, ctx.job_id)
        check_dependency_options(args)
        return await self._insert(self._insert_params(args), None)

    async def _own_job_exists(self, params: dict[str, Any]) -> bool:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.db.queries.job_exists, {"tenant": params["tenant"], "job_id": params["job_id"]}
            )
            return await cur.fetchone() is not None

    async def _insert_pooled(self, params: dict[str, Any], *, checked: bool) -> ScheduledJob:
        while True:
            async with self.db.connection(checked=checked) as conn:
                written = await run_async(conn, insert_one(self.db.queries, params))
            if written is not None:
                return written

    @enqueue_boundary
    @checked_options
    async def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a job now; see :meth:`JobRunner.schedule_job`."""
        params = self.prepare_insert(name, data, None, options)
        return await self._insert(params, options.get("connection"))

    @enqueue_boundary
    @checked_options
    async def schedule_job_at(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a job due at ``run_at``; see :meth:`JobRunner.schedule_job_at`."""
        as_aware_datetime(run_at)
        params = self.prepare_insert(name, data, run_at, options)
        return await self._insert(params, options.get("connection"))

    def prepare_bulk(
        self,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        options: BulkOptions,
    ) -> BulkJobs:
        """Validate a bulk enqueue's shared arguments and take its payloads (checked while
        they are copied: a refused one aborts the COPY and nothing is written).

        Shared by the async runner and its sync twin.
        """
        items = bulk_items(data)
        args = bulk_args(self.registry, self.require_registered, name, options)
        check_dependency_options(args)
        return BulkJobs(args, items, self.runner_type, self.db.channel_jobs)

    @enqueue_boundary
    @checked_options
    async def schedule_jobs(
        self,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[ScheduledJob]:
        """Enqueue many jobs in one transaction: one statement and one COPY, whatever the
        number of jobs (docs/performance.md)."""
        jobs = self.prepare_bulk(name, data, options)
        if not jobs:
            return []
        connection = options.get("connection")
        if connection is not None:
            return await enqueue_many_on(connection, self.db.queries, jobs)
        await self._ensure_started()

        async def write() -> list[ScheduledJob]:
            return await self._write_bulk(jobs)

        if jobs.args.depends_on:
            # the dependencies are locked: one moved to jobs_finished meanwhile, run again
            return await retry_conflicts(write)
        try:
            return await write()
        except UnavailableError:
            # The reply may be lost after the commit. The COPY writes all jobs or none and the
            # ids are the client's: the first job's row tells; not found, the same jobs are
            # written again, and a primary-key conflict then means the first commit landed
            # meanwhile. Either way no job is written twice.
            if await self._own_job_exists({"tenant": jobs.args.tenant, "job_id": jobs.ids[0]}):
                return jobs.handles()
            try:
                return await write()
            except DatabaseError as exc:
                if _is_own_insert(exc):
                    return jobs.handles()
                raise

    async def _write_bulk(self, jobs: BulkJobs) -> list[ScheduledJob]:
        """A bulk enqueue in a transaction of its own on a pooled connection."""
        async with self.db.transaction() as conn:
            return await run_async(conn, insert_many(self.db.queries, jobs, conn.info.encoding))

    # -- the sync runner's transactional enqueue ---------------------------------------------
    def schedule_on_sync_connection(
        self,
        connection: Any,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """``schedule_job(connection=...)`` with a sync psycopg connection, in the caller's
        thread and transaction (:class:`~jobrunner.SyncJobRunner` calls it): the same
        validation and statements as :meth:`schedule_job`."""
        caller = sync_connection(connection)
        params = self.prepare_insert(name, data, run_at, options)
        return enqueue_on_sync(caller, self.db.queries, params)

    def schedule_many_on_sync_connection(
        self,
        connection: Any,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        options: BulkOptions,
    ) -> list[ScheduledJob]:
        """:meth:`schedule_jobs` on the caller's sync connection (see
        :meth:`schedule_on_sync_connection`)."""
        caller = sync_connection(connection)
        jobs = self.prepare_bulk(name, data, options)
        if not jobs:
            return []
        return enqueue_many_on_sync(caller, self.db.queries, jobs)

    # -- inspection and control -------------------------------------------------------------
    async def get_job_status(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobInfo | None:
        """The job's state, or ``None`` when this tenant has no such job."""
        key = as_uuid(job_id, "job_id")
        tenant_id = as_tenant(tenant)
        await self._ensure_started()
        return await self.store.get_job(tenant_id, key)

    async def cancel_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Cancel a live job (a running handler is stopped via NOTIFY) or remove a schedule."""
        key = as_uuid(job_id, "job_id")
        tenant_id = as_tenant(tenant)
        reason = as_optional_text(reason, "reason")
        cancelled_by = as_optional_text(cancelled_by, "cancelled_by")
        await self._ensure_started()
        params = {
            "tenant": tenant_id,
            "job_id": key,
            "reason": reason,
            "cancelled_by": cancelled_by,
            "runner_type": self.runner_type,
            "channel": self.db.channel_cancel,
        }

        async def cancel() -> dict[str, Any] | None:
            async with self.db.connection() as conn:
                cur = await conn.execute(self.db.queries.cancel_job, params)
                return await cur.fetchone()

        # An outcome moving the row to jobs_finished while the cancel waits for it makes the
        # cancel's statement fail; run again, it sees the finished job (and cancels nothing).
        row = await retry_conflicts(cancel)
        if row is not None:
            return True
        return await self._cancel_schedule(tenant_id, key, reason=reason, cancelled_by=cancelled_by)

    async def _cancel_schedule(
        self,
        tenant: uuid.UUID,
        job_id: uuid.UUID,
        *,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Remove a recurring schedule whose tracker row is ``job_id``."""
        return await self.schedule_store.remove_schedule(
            tenant, job_id, reason=reason, cancelled_by=cancelled_by
        )

    async def retry_job(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Run a failed or cancelled job again."""
        await self._ensure_started()
        return await _monitoring.retry_job(
            self.db, as_tenant(tenant), as_uuid(job_id, "job_id"), runner_type=self.runner_type
        )

    async def get_metrics(self, *, tenant: TenantArg | AllTenants = None) -> Metrics:
        """Counts, rates, throughput and queue age."""
        metrics = await super().get_metrics(tenant=tenant)
        metrics.extra["flow"] = await self.flow_metrics(tenant=tenant)
        return metrics

    # -- recurring --------------------------------------------------------------------------
    @checked_options
    async def schedule_recurring_job(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        expression: str,
        **options: Unpack[RecurringOptions],
    ) -> ScheduledJob:
        """Create or update a recurring schedule; see :mod:`._schedule_definitions`."""
        args = recurring_args(
            self.registry, self.require_registered, name, data, expression, **options
        )
        await self._ensure_started()
        return await self.schedule_store.save_schedule(args)

    async def list_schedules(self, *, tenant: TenantArg = None) -> list[ScheduleInfo]:
        """The tenant's schedules."""
        await self._ensure_started()
        return await self.schedule_store.list_schedules(as_tenant(tenant))

    async def pause_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Pause a schedule."""
        await self._ensure_started()
        return await self.schedule_store.set_schedule_paused(
            as_tenant(tenant), as_uuid(job_id, "job_id"), paused=True
        )

    async def resume_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Resume a paused schedule."""
        await self._ensure_started()
        return await self.schedule_store.set_schedule_paused(
            as_tenant(tenant), as_uuid(job_id, "job_id"), paused=False
        )

    # -- workers ----------------------------------------------------------------------------
    def create_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> PostgresWorker:
        """A worker for this runner's registry and database (see :class:`WorkerSettings`)."""
        settings = WorkerSettings.build(concurrency=concurrency, queues=queues, **options)
        return PostgresWorker(self, settings)

    def queue_store(self) -> PostgresStore:
        """A new queue store on this runner's database, for one worker (it keeps that
        worker's claim and flush connections; opening it starts the runner)."""
        return PostgresStore(
            self.db, tables=self.store, ensure_started=self.start, scheduler=self.schedule_child
        )


def _is_own_insert(exc: DatabaseError) -> bool:
    """Whether an insert failed on the primary key: the job id is the client's own, so a
    retried insert that meets it finds the first try's committed row."""
    cause = exc.__cause__
    return (
        isinstance(cause, psycopg.errors.UniqueViolation)
        and cause.diag.constraint_name in _JOB_PRIMARY_KEYS
    )


#: The primary keys of the jobs partitions (0009) and of the table before it.
_JOB_PRIMARY_KEYS = frozenset({"jobs_live_pkey", "jobs_finished_pkey", "jobs_pkey"})
