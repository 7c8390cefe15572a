"""TemporalJobRunner: the JobRunner API on durable Temporal workflows.

Jobs still have their row in the shared PostgreSQL ``jobs`` table (``runner_type =
'temporal'``, ``external_id`` = workflow id ``job-<name>-<job_id>``, ``external_run_id`` = run
id); the workflow's activities keep that row current, so status reads and monitoring are the
same queries as on the PostgreSQL backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Unpack, cast

from psycopg.types.json import Jsonb
from temporalio.client import (
    Client,
    TLSConfig,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from jobrunner._db._database import AutoMigrate, Database, check_auto_migrate
from jobrunner._db._errors import retry_conflicts
from jobrunner._db._monitoring import DatabaseMonitoring
from jobrunner._db._monitoring import retry_job as retry_queue_job
from jobrunner._db._store import JobStore
from jobrunner._errors import (
    InvalidArgumentError,
    UnavailableError,
)
from jobrunner._jobargs import (
    JobArgs,
    bulk_args,
    check_dependency_options,
    enqueue_args,
    recurring_args,
    with_parent,
)
from jobrunner._limits import MAX_LEASE_SECONDS, MAX_TIMEOUT_SECONDS
from jobrunner._models import (
    JobInfo,
    JobStatus,
    ScheduledJob,
    ScheduleInfo,
)
from jobrunner._options import BulkOptions, EnqueueOptions, RecurringOptions, checked_options
from jobrunner._policy import JobPolicy
from jobrunner._runner import JobRunner, TenantArg
from jobrunner._telemetry import enqueue_boundary
from jobrunner._validation import (
    as_aware_datetime,
    as_bulk_data,
    as_optional_key,
    as_optional_text,
    as_seconds,
    as_tenant,
    as_uuid,
)
from jobrunner.backends.postgres._enqueue import insert_dependent, run_async
from jobrunner.backends.temporal._client import DEFAULT_CONNECT_TIMEOUT, connect
from jobrunner.backends.temporal._inputs import policy_input, temporal_priority, workflow_id
from jobrunner.backends.temporal._recurring import TemporalSchedules
from jobrunner.backends.temporal._types import (
    QUERY_STATE,
    SIGNAL_CANCEL,
    SIGNAL_PROGRESS,
    WORKFLOW_NAME,
    JobInput,
)
from jobrunner.backends.temporal._worker import TemporalWorker, TemporalWorkerSettings
from jobrunner.registry import JobHandlerRegistry

logger = logging.getLogger("jobrunner.temporal")

#: Workflow starts in flight at once in ``schedule_jobs``.
START_CONCURRENCY = 32
BULK_BATCH = 1000


class TemporalJobRunner(DatabaseMonitoring, JobRunner):
    """Jobs as Temporal workflows, with their state in the shared PostgreSQL tables.

    Args:
        dsn: PostgreSQL connection string for the ``jobs`` tables (ignored with ``database``).
        address: Temporal frontend ``host:port``.
        namespace: Temporal namespace.
        task_queue: Task queue of the job workflows and activities.
        client: An already connected Temporal client (``address``/``namespace``/``tls`` unused).
        tls: TLS settings for the Temporal connection.
        schema: Schema of the jobrunner tables.
        registry: Handler registry (default: the process-wide one).
        require_registered: Refuse to schedule names without a local handler.
        auto_migrate: ``True`` applies pending migrations in :meth:`start`; ``"check"`` only
            verifies the schema is present and current (raising ``ConfigurationError``);
            ``False`` does neither.
        pool_size: Maximum pooled database connections.
        database: An existing :class:`Database` to share.
        heartbeat_timeout: Seconds without a heartbeat after which Temporal considers an
            attempt's worker dead and retries the attempt elsewhere.
        connect_timeout: Seconds to wait for Temporal in :meth:`start`.
    """

    runner_type = "temporal"

    def __init__(
        self,
        dsn: str | None = None,
        *,
        address: str = "localhost:7233",
        namespace: str = "default",
        task_queue: str = "jobrunner-jobs",
        client: Client | None = None,
        tls: TLSConfig | None = None,
        schema: str = "jobrunner",
        registry: JobHandlerRegistry | None = None,
        require_registered: bool = True,
        auto_migrate: AutoMigrate = True,
        pool_size: int = 10,
        database: Database | None = None,
        heartbeat_timeout: float = 30.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(registry)
        auto_migrate = check_auto_migrate(auto_migrate)
        if database is None:
            if not dsn:
                raise InvalidArgumentError("TemporalJobRunner needs a dsn or a database")
            database = Database(dsn, schema=schema, max_size=pool_size)
        task_queue = as_optional_key(task_queue, "task_queue") or ""
        if not task_queue:
            raise InvalidArgumentError("task_queue must be a non-empty string")
        heartbeat_timeout = as_seconds(
            heartbeat_timeout, "heartbeat_timeout", maximum=MAX_LEASE_SECONDS
        )
        connect_timeout = as_seconds(
            connect_timeout, "connect_timeout", maximum=MAX_TIMEOUT_SECONDS
        )
        self.db = database
        self.store = JobStore(database)
        self.address = address
        self.namespace = namespace
        self.task_queue = task_queue
        self.tls = tls
        self.require_registered = require_registered
        self.auto_migrate = auto_migrate
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.connect_timeout = float(connect_timeout)
        self._client = client
        self._started = False
        #: The runner's recurring schedules (Temporal Schedules and their tracker rows).
        self.schedules = TemporalSchedules(
            lambda: self.client,
            database,
            task_queue=task_queue,
            heartbeat_timeout=self.heartbeat_timeout,
            runner_type=self.runner_type,
        )
        self._start_lock = asyncio.Lock()

    @property
    def schema(self) -> str:
        """Schema of the jobrunner tables."""
        return self.db.schema

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The Temporal client (after :meth:`start`)."""
        if self._client is None:
            raise UnavailableError("TemporalJobRunner is not started: call await runner.start()")
        return self._client

    async def start(self) -> None:
        """Connect to Temporal (short timeout), apply migrations and open the pool.

        Raises:
            UnavailableError: Temporal did not answer; the message names the address.
        """
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._client is None:
                self._client = await connect(
                    self.address,
                    namespace=self.namespace,
                    tls=self.tls,
                    timeout=self.connect_timeout,
                )
            await self.db.prepare_schema(self.auto_migrate)
            await self.db.open()
            self._started = True

    async def close(self) -> None:
        """Close the database pool (the Temporal client holds no resources to release)."""
        self._started = False
        await self.db.close()

    async def _ensure_started(self) -> None:
        if not self._started:
            await self.start()

    async def is_healthy(self) -> bool:
        """Whether both Temporal and the database answer."""
        try:
            await self._ensure_started()
            ok = await asyncio.wait_for(self.client.service_client.check_health(), 5.0)
        except Exception:
            logger.debug("Temporal health check failed", exc_info=True)
            return False
        return bool(ok) and await self.db.ping()

    async def migrate(self) -> list[int]:
        """Apply pending migrations now; returns the versions applied."""
        return await self.db.migrate()

    # -- scheduling -------------------------------------------------------------------------
    def _prepare(self, args: JobArgs, connection: Any) -> tuple[dict[str, Any], JobInput]:
        if connection is not None:
            raise InvalidArgumentError(
                "connection= is not supported by the Temporal backend: a job cannot join your "
                "database transaction and a Temporal workflow start atomically (see "
                "docs/backends.md); schedule after your transaction commits"
            )
        check_dependency_options(args)
        job_id = uuid.uuid4()
        params: dict[str, Any] = {
            "tenant": args.tenant,
            "job_id": job_id,
            "name": args.name,
            "metadata": args.metadata_param,
            "run_at": args.run_at,
            "user_id": args.user_id,
            "runner_type": self.runner_type,
            "external_id": workflow_id(args.name, job_id),
            "queue": args.queue,
            "priority": args.priority,
            "data": args.data_param,
            "max_attempts": args.max_attempts,
            "policy": args.policy_param,
            "singleton_key": args.singleton_key,
            "schedule_id": None,
            "parent_job_id": args.parent_job_id,
            "depends_on": args.depends_on,
            "run_on_failure": args.run_on_failure,
            "notify": False,
            "channel": self.db.channel_jobs,
        }
        job = JobInput(
            job_id=str(job_id),
            tenant=str(args.tenant),
            name=args.name,
            data=args.data,
            policy=policy_input(args.spec) if args.spec is not None else None,
            heartbeat_timeout=self.heartbeat_timeout,
            queue=args.queue,
            priority=args.priority,
            user_id=str(args.user_id),
            metadata=args.metadata,
        )
        return params, job

    async def _start_workflow(
        self,
        job: JobInput,
        run_at: datetime | None,
        *,
        conflict: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.FAIL,
    ) -> WorkflowHandle[Any, Any]:
        assert job.job_id is not None
        delay = None
        if run_at is not None:
            seconds = (run_at - datetime.now(UTC)).total_seconds()
            if seconds > 0:
                delay = timedelta(seconds=seconds)
        return await self.client.start_workflow(
            WORKFLOW_NAME,
            job,
            id=workflow_id(job.name, uuid.UUID(job.job_id)),
            task_queue=self.task_queue,
            memo={"tenant": job.tenant, "job_id": job.job_id, "name": job.name},
            start_delay=delay,
            id_conflict_policy=conflict,
            priority=temporal_priority(job.priority, job.tenant),
        )

    async def _launch_dependent(
        self,
        base: dict[str, Any],
        template: JobInput,
        ids: list[uuid.UUID],
        payloads: list[dict[str, Any]],
        run_at: datetime | None,
    ) -> list[ScheduledJob]:
        """Jobs with dependencies: their rows in one transaction (the dependencies locked
        until it commits, as on PostgreSQL), then their workflows. A ``waiting`` job's
        workflow waits for its release (``JobInput.waiting``: the signal of the activity whose
        outcome released it, or its poll of the row); jobs a failed dependency cancelled at
        once get no workflow (their rows are final)."""
        await self._ensure_started()
        params = {**base, "external_prefix": workflow_id(template.name, "")}
        datas = [json.dumps(p, ensure_ascii=False).encode("utf-8") for p in payloads]

        async def write() -> str:
            async with self.db.transaction() as conn:
                return await run_async(conn, insert_dependent(self.db.queries, params, ids, datas))

        written = await retry_conflicts(write)
        handles = [
            ScheduledJob(job_id=i, external_id=workflow_id(template.name, i), tenant=base["tenant"])
            for i in ids
        ]
        if written == "cancelled":
            return handles
        waiting = written == "waiting"
        failed: list[uuid.UUID] = []
        errors: list[BaseException] = []
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def start_one(job_id: uuid.UUID, payload: dict[str, Any]) -> None:
            job = JobInput(
                **{**template.__dict__, "job_id": str(job_id), "data": payload, "waiting": waiting}
            )
            async with gate:
                try:
                    handle = await self._start_workflow(job, None if waiting else run_at)
                except Exception as exc:  # noqa: BLE001 - collected and reported below
                    failed.append(job_id)
                    errors.append(exc)
                    return
            await self._save_run_id(base["tenant"], job_id, handle)

        await asyncio.gather(*(start_one(i, p) for i, p in zip(ids, payloads, strict=True)))
        if failed:
            await self._mark_start_failed(base["tenant"], failed, errors[0])
            raise UnavailableError(
                f"{len(failed)} of {len(ids)} workflows could not be started on Temporal at "
                f"{self.address}: {errors[0]}"
            ) from errors[0]
        return handles

    async def _launch(
        self, params: dict[str, Any], job: JobInput, run_at: datetime | None
    ) -> ScheduledJob:
        if params["depends_on"]:
            [made] = await self._launch_dependent(
                params, job, [params["job_id"]], [dict(job.data)], run_at
            )
            return made
        await self._ensure_started()
        async with self.db.connection() as conn:
            cur = await conn.execute(self.db.queries.insert_job, params)
            row = await cur.fetchone()
            if row is None and params["singleton_key"] is not None:
                cur = await conn.execute(self.db.queries.find_singleton, params)
                existing = await cur.fetchone()
                if existing is not None:
                    info = await self.store.get_job(params["tenant"], existing["job_id"])
                    return ScheduledJob(
                        job_id=existing["job_id"],
                        external_id=info.external_id if info else None,
                        tenant=params["tenant"],
                        created=False,
                    )
        if row is None:
            # The singleton's holder finished between the two statements: try once more.
            return await self._launch(params, job, run_at)
        try:
            handle = await self._start_workflow(job, run_at)
        except Exception as exc:
            await self._mark_start_failed(params["tenant"], [params["job_id"]], exc)
            raise UnavailableError(
                f"could not start the workflow of job {params['job_id']} on Temporal at "
                f"{self.address}: {exc}"
            ) from exc
        await self._save_run_id(params["tenant"], params["job_id"], handle)
        return ScheduledJob(
            job_id=params["job_id"], external_id=params["external_id"], tenant=params["tenant"]
        )

    async def _save_run_id(
        self, tenant: uuid.UUID, job_id: uuid.UUID, handle: WorkflowHandle[Any, Any]
    ) -> None:
        run_id = handle.first_execution_run_id or handle.result_run_id
        if run_id:
            await self._write(
                self.db.queries.temporal_set_run_id,
                {"tenant": tenant, "job_id": job_id, "run_id": run_id},
            )

    async def _write(self, query: str, params: dict[str, Any]) -> None:
        """One autocommit statement on a job row, run again when it waited for a row that a
        concurrent cancel or outcome moved to jobs_finished (0009): it then sees the moved
        row."""

        async def write() -> None:
            async with self.db.connection() as conn:
                await conn.execute(query, params)

        await retry_conflicts(write)

    async def _mark_start_failed(
        self, tenant: uuid.UUID, job_ids: list[uuid.UUID], exc: BaseException
    ) -> None:
        try:
            await self._write(
                self.db.queries.temporal_start_failed,
                {
                    "tenant": tenant,
                    "job_ids": job_ids,
                    "message": f"could not start the Temporal workflow: {exc}"[:2000],
                },
            )
        except Exception:
            logger.exception("could not mark %d unstarted jobs failed", len(job_ids))

    @enqueue_boundary
    @checked_options
    async def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Insert the job's row and start its workflow; see :meth:`JobRunner.schedule_job`.

        Raises:
            InvalidArgumentError: also when ``connection`` is given (not supported here).
            UnavailableError: Temporal refused the workflow start (the row is marked failed).
        """
        params, job = self._prepare(
            enqueue_args(self.registry, self.require_registered, name, data, None, options),
            options.get("connection"),
        )
        return await self._launch(params, job, None)

    @enqueue_boundary
    @checked_options
    async def schedule_job_at(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Like :meth:`schedule_job`, with the workflow's start delayed until ``run_at``."""
        when = as_aware_datetime(run_at)
        params, job = self._prepare(
            enqueue_args(self.registry, self.require_registered, name, data, when, options),
            options.get("connection"),
        )
        return await self._launch(params, job, when)

    async def schedule_child(
        self,
        ctx: Any,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """``ctx.schedule_job`` in a Temporal handler: a job of the handler's tenant recording
        its parent, its workflow started like :meth:`schedule_job`'s."""
        when = None if run_at is None else as_aware_datetime(run_at)
        args = enqueue_args(
            self.registry,
            self.require_registered,
            name,
            data,
            when,
            cast(EnqueueOptions, {"tenant": ctx.tenant, **options}),
        )
        params, job = self._prepare(with_parent(args, ctx.tenant, ctx.job_id), None)
        return await self._launch(params, job, when)

    @enqueue_boundary
    @checked_options
    async def schedule_jobs(
        self,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[ScheduledJob]:
        """Insert all rows in one transaction, then start their workflows concurrently."""
        payloads = [dict(item) for item in as_bulk_data(data)[0]]
        shared = bulk_args(self.registry, self.require_registered, name, options)
        when = shared.run_at
        base, template = self._prepare(shared, options.get("connection"))
        if not payloads:
            return []
        ids = [uuid.uuid4() for _ in payloads]
        if shared.depends_on:
            return await self._launch_dependent(base, template, ids, payloads, when)
        await self._ensure_started()
        async with self.db.transaction() as conn:
            for start in range(0, len(ids), BULK_BATCH):
                params = dict(base)
                params["job_ids"] = ids[start : start + BULK_BATCH]
                params["datas"] = [Jsonb(p) for p in payloads[start : start + BULK_BATCH]]
                await conn.execute(self.db.queries.temporal_insert_jobs_bulk, params)
        gate = asyncio.Semaphore(START_CONCURRENCY)
        failed: list[uuid.UUID] = []
        first_error: list[BaseException] = []

        async def start_one(job_id: uuid.UUID, payload: dict[str, Any]) -> None:
            job = JobInput(**{**template.__dict__, "job_id": str(job_id), "data": payload})
            async with gate:
                try:
                    handle = await self._start_workflow(job, when)
                except Exception as exc:  # noqa: BLE001 - collected and reported below
                    failed.append(job_id)
                    first_error.append(exc)
                    return
            await self._save_run_id(base["tenant"], job_id, handle)

        await asyncio.gather(*(start_one(i, p) for i, p in zip(ids, payloads, strict=True)))
        if failed:
            await self._mark_start_failed(base["tenant"], failed, first_error[0])
            raise UnavailableError(
                f"{len(failed)} of {len(ids)} workflows could not be started on Temporal at "
                f"{self.address}: {first_error[0]}"
            ) from first_error[0]
        return [
            ScheduledJob(job_id=i, external_id=workflow_id(base["name"], i), tenant=base["tenant"])
            for i in ids
        ]

    # -- inspection and control -------------------------------------------------------------
    async def get_job_status(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobInfo | None:
        """The job's row (kept current by the workflow's activities)."""
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
        """Mark the job cancelled and cancel its workflow (a running handler is stopped on its
        next heartbeat), or delete a recurring schedule given its tracker row id."""
        key = as_uuid(job_id, "job_id")
        tenant_id = as_tenant(tenant)
        reason = as_optional_text(reason, "reason")
        cancelled_by = as_optional_text(cancelled_by, "cancelled_by")
        await self._ensure_started()
        async with self.db.connection() as conn:
            cur = await conn.execute(self.db.queries.get_job, {"tenant": tenant_id, "job_id": key})
            row = await cur.fetchone()
            if row is None:
                return False
            # A job written while the Temporal fallback was in effect is a PostgreSQL queue
            # job: cancelling it is the PostgreSQL cancel (a running handler is stopped by the
            # Temporal worker's PostgreSQL queue on the cancel notification).
            fallback_job = row["runner_type"] == "postgres" and row["status"] != "active"
            if row["runner_type"] != self.runner_type and not fallback_job:
                return False
        if row["status"] == JobStatus.ACTIVE.value:
            return await self.schedules.remove(tenant_id, key, reason, cancelled_by)
        params = {
            "tenant": tenant_id,
            "job_id": key,
            "reason": reason,
            "cancelled_by": cancelled_by,
            "runner_type": row["runner_type"],
            "channel": self.db.channel_cancel,
        }

        async def cancel() -> dict[str, Any] | None:
            async with self.db.connection() as conn:
                cur = await conn.execute(self.db.queries.cancel_job, params)
                return await cur.fetchone()

        # An activity moving the row to jobs_finished while the cancel waits for it fails the
        # cancel's statement (0009); run again, it sees the finished job.
        cancelled = await retry_conflicts(cancel)
        if cancelled is None:
            return False
        if row["external_id"] and not fallback_job:
            await self._cancel_workflow(row["external_id"], reason, cancelled_by)
        return True

    async def _cancel_workflow(
        self, wf_id: str, reason: str | None, cancelled_by: str | None
    ) -> None:
        handle = self.client.get_workflow_handle(wf_id)
        try:
            # The signal carries reason and canceller into the workflow's state; the cancel
            # request also reaches a workflow whose delayed start has not happened yet.
            await handle.signal(SIGNAL_CANCEL, {"reason": reason, "cancelled_by": cancelled_by})
            await handle.cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                logger.warning("could not cancel workflow %s: %s", wf_id, exc)

    async def retry_job(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Run a failed or cancelled job again in a new workflow run (attempts start over)."""
        key = as_uuid(job_id, "job_id")
        tenant_id = as_tenant(tenant)
        await self._ensure_started()

        async def reset() -> dict[str, Any] | None:
            async with self.db.connection() as conn:
                cur = await conn.execute(
                    self.db.queries.temporal_reset_for_retry, {"tenant": tenant_id, "job_id": key}
                )
                return await cur.fetchone()

        # A concurrent retry moving the row back to jobs_live while this one waits for it
        # fails this statement (0009); run again, it sees the job queued and leaves it.
        row = await retry_conflicts(reset)
        if row is None:
            # A job written while the Temporal fallback was in effect is a PostgreSQL queue
            # job (run by the Temporal workers' PostgreSQL queue): retry it there.
            return await retry_queue_job(self.db, tenant_id, key, runner_type="postgres")
        # The job's own policy, stored when it was first enqueued; else this registry's.
        spec = self.registry.find(row["type"])
        stored = row["policy"]
        fallback = spec.policy if spec is not None else None
        policy = JobPolicy.from_json(stored, fallback=fallback) if stored else fallback
        job = JobInput(
            job_id=str(key),
            tenant=str(tenant_id),
            name=row["type"],
            data=dict(row["data"] or {}),
            policy=policy_input(policy) if policy is not None else None,
            heartbeat_timeout=self.heartbeat_timeout,
            queue=row["queue"],
            priority=int(row["priority"] or 0),
            user_id=str(row["user_id"]),
            metadata=dict(row["metadata"] or {}),
        )
        try:
            handle = await self._start_workflow(
                job, None, conflict=WorkflowIDConflictPolicy.TERMINATE_EXISTING
            )
        except Exception as exc:
            await self._mark_start_failed(tenant_id, [key], exc)
            raise UnavailableError(f"could not restart job {key} on Temporal: {exc}") from exc
        await self._save_run_id(tenant_id, key, handle)
        return True

    # -- Temporal-specific ------------------------------------------------------------------
    async def _workflow_of(self, job_id: uuid.UUID | str, tenant: TenantArg) -> str | None:
        info = await self.get_job_status(job_id, tenant=tenant)
        if info is None or info.runner_type != self.runner_type or not info.external_id:
            return None
        return info.external_id

    async def get_job_state(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> dict[str, Any] | None:
        """The workflow's ``getJobState`` query; ``None`` when the tenant has no such job."""
        wf_id = await self._workflow_of(job_id, tenant)
        if wf_id is None:
            return None
        state: dict[str, Any] = await self.client.get_workflow_handle(wf_id).query(QUERY_STATE)
        return state

    async def update_progress(
        self,
        job_id: uuid.UUID | str,
        progress: int,
        message: str | None = None,
        *,
        tenant: TenantArg = None,
    ) -> bool:
        """Send the ``updateProgress`` signal (progress reported from outside the handler)."""
        if (
            not isinstance(progress, int | float)
            or isinstance(progress, bool)
            or not (0 <= progress <= 100)
        ):
            raise InvalidArgumentError("progress must be a number between 0 and 100")
        message = as_optional_text(message, "message")
        wf_id = await self._workflow_of(job_id, tenant)
        if wf_id is None:
            return False
        await self.client.get_workflow_handle(wf_id).signal(
            SIGNAL_PROGRESS, {"progress": progress, "message": message}
        )
        return True

    # -- recurring --------------------------------------------------------------------------
    @checked_options
    async def schedule_recurring_job(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        expression: str,
        **options: Unpack[RecurringOptions],
    ) -> ScheduledJob:
        """Create or update (in place, data included) a Temporal Schedule for ``name``.

        The schedule id is ``singleton_key`` or ``recurring-<name>-<tenant>``; Temporal
        schedule ids are unique per namespace, so a key another tenant uses is refused.
        """
        args = recurring_args(
            self.registry, self.require_registered, name, data, expression, **options
        )
        await self._ensure_started()
        return await self.schedules.save(args)

    async def list_schedules(self, *, tenant: TenantArg = None) -> list[ScheduleInfo]:
        """The tenant's schedules, with next run from Temporal and last run from the table."""
        tenant_id = as_tenant(tenant)
        await self._ensure_started()
        return await self.schedules.list(tenant_id)

    async def pause_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Pause the Temporal Schedule whose tracker row is ``job_id``."""
        return await self._set_paused(job_id, tenant, paused=True)

    async def resume_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """Unpause the Temporal Schedule whose tracker row is ``job_id``."""
        return await self._set_paused(job_id, tenant, paused=False)

    async def _set_paused(
        self, job_id: uuid.UUID | str, tenant: TenantArg, *, paused: bool
    ) -> bool:
        key = as_uuid(job_id, "job_id")
        tenant_id = as_tenant(tenant)
        await self._ensure_started()
        return await self.schedules.set_paused(tenant_id, key, paused=paused)

    # -- workers ----------------------------------------------------------------------------
    def create_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> TemporalWorker:
        """A Temporal worker for this runner's task queue and registered handlers.

        Options: ``shutdown_grace`` (seconds running activities get on stop, default 30),
        ``heartbeat_interval`` (seconds between heartbeats sent to the server, default 1),
        ``postgres_queue`` (default ``True``: the worker also runs the PostgreSQL queue, where
        producers that could not reach Temporal wrote their jobs; docs/backends.md).
        PostgreSQL worker options such as ``lease_seconds`` configure that queue's worker.
        """
        settings = TemporalWorkerSettings.build(concurrency=concurrency, queues=queues, **options)
        return TemporalWorker(self, settings)
