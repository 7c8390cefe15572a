"""The activities of the job workflow: the handler itself and the table bookkeeping.

The handler activity keeps the shared ``jobs`` / ``job_details`` rows current exactly as the
PostgreSQL worker does: ``processing`` with the attempt number when an attempt starts,
``retrying`` (with the next run time) or ``failed`` after a failed attempt, ``completed`` with
the result, one ``attempt`` row per attempt and the handler's ``ctx.step`` rows. Every write of
an attempt is fenced by the row's ``lease_token`` (bumped when the attempt starts), so an
attempt that Temporal already gave up on (timed out, worker presumed dead) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from psycopg.types.json import Jsonb
from temporalio import activity
from temporalio.exceptions import ApplicationError

from jobrunner._context import DurableStart, JobContext
from jobrunner._db._errors import retry_conflicts
from jobrunner._db._store import JobStore
from jobrunner._errors import (
    NonRetryable,
    NotSupportedError,
    Retry,
    ScheduleError,
    UnavailableError,
)
from jobrunner._execution import Aborted, AbortReason, Attempt, Failed, run_attempt
from jobrunner._models import JobStatus, MissedTickPolicy, OverlapPolicy, ScheduledJob
from jobrunner._options import EnqueueOptions
from jobrunner._policy import JobPolicy, RetryPolicy
from jobrunner._recurrence import Recurrence, parse_recurrence
from jobrunner._validation import SYSTEM_USER
from jobrunner.backends.temporal import _schedules
from jobrunner.backends.temporal._inputs import policy_input
from jobrunner.backends.temporal._types import (
    CHECK_RELEASE_ACTIVITY,
    FINISH_ACTIVITY,
    PROGRESS_ACTIVITY,
    REGISTER_RUN_ACTIVITY,
    REGISTERED_WAITING,
    RESOLVE_POLICY_ACTIVITY,
    RUN_ACTIVITY,
    SIGNAL_PROGRESS_REPORTED,
    SIGNAL_RELEASED,
    FinishInput,
    PolicyInput,
    ProgressInput,
    RegisterRunInput,
    ReleaseInput,
    RunInput,
)
from jobrunner.registry import JobHandlerRegistry

logger = logging.getLogger("jobrunner.temporal")


class JobActivities:
    """Activity implementations bound to a registry, the jobs tables and a worker.

    Args:
        registry: The handlers this worker runs.
        store: The shared jobs tables (status, attempts, steps, progress).
        worker_id: Identity of the worker, written to the rows of its attempts.
        executor: Threads for plain ``def`` handlers.
        heartbeat_every: Seconds between heartbeats sent to Temporal.
        scheduler: The runner's ``schedule_child`` (``ctx.schedule_job`` of handlers).
    """

    def __init__(
        self,
        registry: JobHandlerRegistry,
        store: JobStore,
        *,
        worker_id: uuid.UUID,
        executor: Executor | None,
        heartbeat_every: float = 1.0,
        scheduler: Callable[..., Awaitable[ScheduledJob]] | None = None,
    ) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self.db = store.db
        self.q = store.db.queries
        self.store = store
        self.worker_id = worker_id
        self.executor = executor
        self.heartbeat_every = heartbeat_every
        #: Attempts running in this worker, by job id (one activity per job at a time).
        self.running: dict[str, Attempt] = {}

    def definitions(self) -> list[Any]:
        """The activity callables to register on a Temporal worker."""
        return [
            self.run_job,
            self.finish_job,
            self.register_run,
            self.signal_progress,
            self.resolve_policy,
            self.check_release,
        ]

    # -- the handler ------------------------------------------------------------------------
    @activity.defn(name=RUN_ACTIVITY)
    async def run_job(self, inp: RunInput) -> Any:
        """One attempt of the job's handler."""
        info = activity.info()
        tenant = uuid.UUID(inp.tenant)
        job_id = uuid.UUID(inp.job_id)
        spec = self.registry.find(inp.name)
        # The policy stored with the job when it was enqueued (the workflow's input) is the
        # only source of truth, whatever this worker's registry says.
        policy = _job_policy(inp.policy)
        row = await self._fetch_one(
            self.q.temporal_begin_attempt,
            {
                "tenant": tenant,
                "job_id": job_id,
                "attempt": info.attempt,
                "max_attempts": policy.retry.max_attempts,
                "worker_id": self.worker_id,
                "workflow_id": info.workflow_id,
                "run_id": info.workflow_run_id,
            },
        )
        if row is None:
            return await self._already_final(tenant, job_id)
        ctx = JobContext(
            job_id=job_id,
            name=inp.name,
            tenant=tenant,
            attempt=info.attempt,
            max_attempts=policy.retry.max_attempts,
            queue=row["queue"],
            metadata=dict(row["metadata"] or {}),
            schedule_id=row["schedule_id"],
            lease_token=int(row["lease_token"]),
            _sink=_ProgressMirror(
                self.store, info.workflow_id or "", info.workflow_run_id, self.scheduler
            ),
        )
        attempt = Attempt(ctx, inp.data, policy)
        scheduled = info.current_attempt_scheduled_time
        if scheduled is not None:
            attempt.due_at = scheduled.timestamp()
        beat = asyncio.create_task(self._heartbeat(ctx), name=f"jobrunner-heartbeat-{job_id}")
        work = asyncio.create_task(
            run_attempt(attempt, spec, executor=self.executor, runner_type="temporal"),
            name=f"jobrunner-run-{job_id}",
        )
        self.running[inp.job_id] = attempt
        try:
            try:
                outcome = await asyncio.shield(work)
            except asyncio.CancelledError:
                details = activity.cancellation_details()
                if details is not None and details.cancel_requested:
                    attempt.abort(AbortReason.CANCELLED)
                else:
                    # Worker shutdown past its grace, or the server gave up on this attempt:
                    # a failed attempt that the policy retries, not a cancelled job.
                    attempt.abort(AbortReason.INTERRUPTED)
                outcome = await work
        finally:
            beat.cancel()
            if self.running.get(inp.job_id) is attempt:
                del self.running[inp.job_id]
        if isinstance(outcome, Aborted):
            if outcome.reason is AbortReason.CANCELLED:
                # The job was cancelled (cancel_job or the cancelJob signal): whoever cancelled
                # marks the row; this attempt records nothing more.
                raise asyncio.CancelledError
            stop = UnavailableError("the attempt was interrupted before the handler finished")
            outcome = attempt.fail_with(stop)
            await self._record_failure(attempt, outcome)
            raise _as_application_error(stop, outcome.retry_in) from None
        if isinstance(outcome, Failed):
            await self._record_failure(attempt, outcome)
            raise _application_error(outcome)
        done = await self._fetch_one(
            self.q.temporal_complete,
            {
                "tenant": tenant,
                "job_id": job_id,
                "token": ctx.lease_token,
                "result": outcome.result_json,
                "started_at": datetime.fromtimestamp(attempt.started_wall, UTC),
                "duration_ms": attempt.duration_ms,
                "worker_id": str(self.worker_id),
            },
        )
        if done is not None and done["has_dependents"]:
            await self._wake_dependents(tenant, job_id)
        return outcome.result

    async def _heartbeat(self, ctx: JobContext) -> None:
        """Heartbeat while the handler runs: Temporal delivers cancellation on heartbeats and
        detects a dead worker by their absence (the SDK throttles what reaches the server)."""
        while True:
            activity.heartbeat({"attempt": ctx.attempt})
            await asyncio.sleep(self.heartbeat_every)

    async def _already_final(self, tenant: uuid.UUID, job_id: uuid.UUID) -> Any:
        """The row is final (an earlier attempt completed, or the job was cancelled)."""
        info = await self.store.get_job(tenant, job_id)
        if info is None:
            raise ApplicationError(
                f"job {job_id} has no row", type="JobNotFound", non_retryable=True
            )
        if info.status is JobStatus.COMPLETED:
            return info.result
        if info.status is JobStatus.CANCELLED:
            raise ApplicationError(
                f"job {job_id} was cancelled", type="JobCancelled", non_retryable=True
            )
        raise ApplicationError(
            f"job {job_id} is already {info.status.value}",
            type="JobAlreadyFinal",
            non_retryable=True,
        )

    async def _record_failure(self, attempt: Attempt, outcome: Failed) -> None:
        ctx = attempt.ctx
        row = await self._fetch_one(
            self.q.temporal_fail,
            {
                "tenant": ctx.tenant,
                "job_id": ctx.job_id,
                "token": ctx.lease_token,
                "error": Jsonb(outcome.error.to_json()),
                "retry_in": outcome.retry_in,
                "started_at": datetime.fromtimestamp(attempt.started_wall, UTC),
                "duration_ms": attempt.duration_ms,
                "worker_id": str(self.worker_id),
            },
        )
        if outcome.retry_in is None and row is not None and row["has_dependents"]:
            await self._wake_dependents(ctx.tenant, ctx.job_id)

    async def _wake_dependents(self, tenant: uuid.UUID, job_id: uuid.UUID) -> None:
        """Signal the workflows of Temporal dependents this job's end released (the release
        itself committed with the outcome, migration 0012). Best effort: a waiting workflow
        also polls its row (``RELEASE_POLL``)."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.q.temporal_released_dependents, {"tenant": tenant, "job_id": job_id}
            )
            rows = await cur.fetchall()
        if not rows:
            return
        client = activity.client()
        for row in rows:
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(row["external_id"]).signal(SIGNAL_RELEASED)

    @activity.defn(name=CHECK_RELEASE_ACTIVITY)
    async def check_release(self, inp: ReleaseInput) -> dict[str, Any]:
        """A waiting workflow's look at its row: ``{status, due_in}``."""
        row = await self._fetch_one(
            self.q.temporal_release_state,
            {"tenant": uuid.UUID(inp.tenant), "job_id": uuid.UUID(inp.job_id)},
        )
        if row is None:
            return {"status": "cancelled", "due_in": 0.0}
        return {"status": row["status"], "due_in": float(row["due_in"] or 0.0)}

    async def _fetch_one(self, query: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run one fenced write (its row, if it returns any), again when it lost a race with a
        statement moving the job's row between partitions (0009): an activity that failed on
        that would make Temporal run the handler once more."""

        async def run() -> dict[str, Any] | None:
            async with self.db.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchone() if cur.description is not None else None

        return await retry_conflicts(run)

    # -- bookkeeping ------------------------------------------------------------------------
    @activity.defn(name=FINISH_ACTIVITY)
    async def finish_job(self, inp: FinishInput) -> bool:
        """Record ``failed`` or ``cancelled`` unless the row is final already."""
        tenant = uuid.UUID(inp.tenant)
        job_id = uuid.UUID(inp.job_id)
        run_id = activity.info().workflow_run_id
        if inp.status == "cancelled":
            row = await self._fetch_one(
                self.q.temporal_finish_cancelled,
                {
                    "tenant": tenant,
                    "job_id": job_id,
                    "run_id": run_id,
                    "reason": inp.reason,
                    "cancelled_by": inp.cancelled_by,
                },
            )
        else:
            row = await self._fetch_one(
                self.q.temporal_finish_failed,
                {
                    "tenant": tenant,
                    "job_id": job_id,
                    "run_id": run_id,
                    "error": Jsonb(
                        {"type": inp.error_type, "message": inp.message, "traceback": None}
                    ),
                },
            )
        if row is not None:
            await self._wake_dependents(tenant, job_id)
        return row is not None

    @activity.defn(name=REGISTER_RUN_ACTIVITY)
    async def register_run(self, inp: RegisterRunInput) -> str | None:
        """Insert the row of a run fired by a Temporal Schedule; idempotent.

        Returns ``None`` when the run goes ahead, else why it does not: its tick has its job
        already (``duplicate``: schedule_ticks' ``(tenant, schedule_id, scheduled_for)`` key) or
        the schedule's missed-tick policy drops it (see ``_schedules.tick_decision``). The
        tracker's ``last_run_*``, ``skipped_ticks`` and ``next_run_at`` follow.
        """
        info = activity.info()
        job = inp.job
        tenant = uuid.UUID(job.tenant)
        job_id = uuid.UUID(inp.job_id)
        tracker_id = uuid.UUID(job.schedule_id) if job.schedule_id else None
        nominal = _parse_time(inp.scheduled_for)
        now = datetime.now(UTC)
        temporal_id: str | None = None
        waiting = False
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                self.q.temporal_run_exists, {"tenant": tenant, "job_id": job_id}
            )
            earlier = await cur.fetchone()
            if earlier is not None:
                # this activity's earlier attempt registered the run
                return REGISTERED_WAITING if earlier["status"] == "waiting" else None
            tracker: dict[str, Any] | None = None
            if tracker_id is not None:
                cur = await conn.execute(
                    self.q.temporal_lock_tracker, {"tenant": tenant, "job_id": tracker_id}
                )
                tracker = await cur.fetchone()
            live = tracker is not None and tracker["status"] == JobStatus.ACTIVE.value
            meta: dict[str, Any] = dict(tracker["metadata"] or {}) if tracker else {}
            if tracker is not None:
                temporal_id = tracker["external_id"]
            rec = _recurrence_of(meta)
            tick = nominal
            if tick is not None and rec is not None:
                tick = _schedules.canonical_tick(tick, rec)
                offset = meta.get("interval_offset_seconds")
                if not _schedules.is_tick(rec, tick, offset if isinstance(offset, int) else None):
                    rec = None  # a manual trigger: runs as asked, not keyed by a tick
            reason: str | None = None
            if live and rec is not None and tick is not None:
                reason = _schedules.tick_decision(
                    rec,
                    tick,
                    now,
                    missed_ticks=_enum(MissedTickPolicy, meta.get("missed_ticks"), "latest"),
                    overlap=_enum(OverlapPolicy, meta.get("overlap"), "allow"),
                    max_catch_up=int(meta.get("max_catch_up") or 10),
                )
            if reason is None:
                run_meta = dict(job.metadata or {})
                if tracker_id is not None:
                    run_meta["schedule_id"] = str(tracker_id)
                run_meta["scheduled_for"] = _schedules.iso(tick if rec is not None else nominal)
                cur = await conn.execute(
                    self.q.temporal_insert_run,
                    {
                        "tenant": tenant,
                        "job_id": job_id,
                        "name": job.name,
                        "metadata": Jsonb(run_meta),
                        "user_id": uuid.UUID(job.user_id) if job.user_id else SYSTEM_USER,
                        "external_id": info.workflow_id,
                        "external_run_id": info.workflow_run_id,
                        "queue": job.queue,
                        "priority": job.priority,
                        "data": Jsonb(job.data or {}),
                        "max_attempts": job.policy.max_attempts if job.policy else 3,
                        "schedule_id": tracker_id,
                        "scheduled_for": tick if rec is not None else None,
                    },
                )
                if await cur.fetchone() is None:
                    reason = "duplicate"
                elif live and meta.get("depends_on_previous") and meta.get("last_job_id"):
                    waiting = await self._after_previous_run(
                        conn, tenant, job_id, uuid.UUID(str(meta["last_job_id"]))
                    )
            if live and tracker_id is not None:
                patch: dict[str, Any] = {}
                last = _parse_time(meta.get("last_run_at"))
                if reason is None and (last is None or tick is None or tick >= last):
                    patch = {
                        "last_run_at": _schedules.iso(tick or now),
                        "last_job_id": str(job_id),
                        "last_run_status": (
                            JobStatus.WAITING if waiting else JobStatus.QUEUED
                        ).value,
                    }
                await conn.execute(
                    self.q.temporal_patch_tracker,
                    {
                        "tenant": tenant,
                        "job_id": tracker_id,
                        "patch": Jsonb(patch),
                        "skipped": 0 if reason is None else 1,
                        "next_run_at": None,
                    },
                )
        if reason is not None:
            logger.info(
                "scheduled run of %s for %s skipped: %s",
                job.name,
                _schedules.iso(tick) or "an unknown tick",
                reason,
            )
        if tracker_id is not None and temporal_id:
            await self._refresh_next_run(tenant, tracker_id, temporal_id)
        if reason is None and waiting:
            return REGISTERED_WAITING
        return reason

    async def _after_previous_run(
        self, conn: Any, tenant: uuid.UUID, job_id: uuid.UUID, previous: uuid.UUID
    ) -> bool:
        """``depends_on_previous``: make the run just registered wait for the schedule's
        previous run while that one is live (its row locked first, as on PostgreSQL). A
        conflict with the previous run moving to jobs_finished fails the transaction, and
        Temporal runs this activity again. ``True``: the run is waiting."""
        cur = await conn.execute(
            self.q.sched_lock_previous_run, {"tenant": tenant, "job_id": previous}
        )
        found = await cur.fetchone()
        if found is None or not found["live"]:
            return False
        await conn.execute(
            self.q.sched_chain_runs, {"tenant": tenant, "job_ids": [job_id], "previous": previous}
        )
        return True

    async def _refresh_next_run(
        self, tenant: uuid.UUID, tracker_id: uuid.UUID, temporal_id: str
    ) -> None:
        """The tracker's ``next_run_at`` from the Temporal Schedule's next action time."""
        try:
            desc = await activity.client().get_schedule_handle(temporal_id).describe()
        except Exception:  # informational only; never fails the run
            logger.debug("could not describe schedule %s", temporal_id, exc_info=True)
            return
        times = desc.info.next_action_times
        next_run = None if desc.schedule.state.paused or not times else times[0]
        await self._fetch_one(
            self.q.temporal_patch_tracker,
            {
                "tenant": tenant,
                "job_id": tracker_id,
                "patch": Jsonb({"next_run_at": _schedules.iso(next_run)}),
                "skipped": 0,
                "next_run_at": next_run,
            },
        )

    @activity.defn(name=PROGRESS_ACTIVITY)
    async def signal_progress(self, inp: ProgressInput) -> None:
        """Persist progress received through the ``updateProgress`` signal."""
        await self._fetch_one(
            self.q.temporal_signal_progress,
            {
                "tenant": uuid.UUID(inp.tenant),
                "job_id": uuid.UUID(inp.job_id),
                "progress": inp.progress,
                "message": inp.message,
            },
        )

    @activity.defn(name=RESOLVE_POLICY_ACTIVITY)
    async def resolve_policy(self, name: str) -> PolicyInput:
        """The policy of ``name`` from this worker's registry (producer had none)."""
        return policy_input(self.registry.find(name))


class _ProgressMirror:
    """The handler's JobSink: the shared JobStore, plus a signal so the workflow's
    ``getJobState`` shows the progress the row shows (best effort, never fails the handler)."""

    def __init__(
        self,
        store: JobStore,
        workflow_id: str,
        run_id: str | None,
        scheduler: Callable[..., Awaitable[ScheduledJob]] | None = None,
    ) -> None:
        self.store = store
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.scheduler = scheduler

    async def schedule_child(
        self,
        ctx: JobContext,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """``ctx.schedule_job``: through the runner that built this worker."""
        if self.scheduler is None:
            raise NotSupportedError("this worker has no runner to enqueue child jobs")
        return await self.scheduler(ctx, name, data, run_at, options)

    async def save_progress(self, ctx: JobContext, progress: int, message: str | None) -> None:
        await self.store.save_progress(ctx, progress, message)
        try:
            handle = activity.client().get_workflow_handle(self.workflow_id, run_id=self.run_id)
            await handle.signal(
                SIGNAL_PROGRESS_REPORTED, {"progress": progress, "message": message}
            )
        except Exception:
            logger.debug(
                "could not mirror progress to workflow %s", self.workflow_id, exc_info=True
            )

    async def start_step(self, ctx: JobContext, name: str) -> uuid.UUID:
        return await self.store.start_step(ctx, name)

    async def finish_step(
        self, ctx: JobContext, detail_id: uuid.UUID, *, ok: bool, result: Any, error: Any
    ) -> None:
        await self.store.finish_step(ctx, detail_id, ok=ok, result=result, error=error)

    async def dependency_results(self, ctx: JobContext) -> dict[uuid.UUID, Any]:
        """See :meth:`JobStore.dependency_results`."""
        return await self.store.dependency_results(ctx)

    async def begin_durable_step(self, ctx: JobContext, name: str) -> DurableStart:
        return await self.store.begin_durable_step(ctx, name)

    async def complete_durable_step(
        self, ctx: JobContext, detail_id: uuid.UUID, result_json: str | None, *, tries: int
    ) -> bool:
        return await self.store.complete_durable_step(ctx, detail_id, result_json, tries=tries)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _recurrence_of(meta: dict[str, Any]) -> Recurrence | None:
    expression = meta.get("expression")
    if not isinstance(expression, str):
        return None
    try:
        return parse_recurrence(expression, meta.get("timezone") or "UTC")
    except ScheduleError:
        return None


_E = TypeVar("_E", MissedTickPolicy, OverlapPolicy)


def _enum(kind: type[_E], value: object, default: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        return kind(default)


def _job_policy(policy: PolicyInput) -> JobPolicy:
    return JobPolicy(
        retry=RetryPolicy(
            max_attempts=policy.max_attempts,
            initial_interval=policy.initial_interval,
            backoff_coefficient=policy.backoff_coefficient,
            max_interval=policy.max_interval,
            jitter=policy.jitter,
            non_retryable_errors=tuple(policy.non_retryable_error_types),
        ),
        timeout=policy.timeout,
    )


def _application_error(outcome: Failed) -> ApplicationError:
    """What Temporal sees of a failed attempt: the core's decision, with the exact delay."""
    error = outcome.error
    kind = error.type.rsplit(".", 1)[-1]
    message = error.message or kind
    if outcome.retry_in is None:
        return ApplicationError(message, type=kind, non_retryable=True)
    return ApplicationError(
        message, type=kind, next_retry_delay=timedelta(seconds=outcome.retry_in)
    )


def _as_application_error(exc: BaseException, retry_in: float | None) -> ApplicationError:
    """What Temporal sees: non-retryable when jobrunner decided so, else the exact delay."""
    kind = type(exc).__name__
    message = str(exc) or (exc.reason if isinstance(exc, Retry) else kind)
    if retry_in is None:
        return ApplicationError(
            message,
            type=kind if not isinstance(exc, NonRetryable) else "NonRetryable",
            non_retryable=True,
        )
    return ApplicationError(message, type=kind, next_retry_delay=timedelta(seconds=retry_in))
