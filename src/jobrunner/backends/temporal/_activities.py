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
import json
import logging
import time
import uuid
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg.types.json import Jsonb
from temporalio import activity
from temporalio.exceptions import ApplicationError

from jobrunner._context import JobContext, SyncJobContext
from jobrunner._db._store import JobStore
from jobrunner._errors import (
    HandlerNotFoundError,
    NonRetryable,
    Retry,
    ScheduleError,
    UnavailableError,
)
from jobrunner._models import JobStatus, MissedTickPolicy, OverlapPolicy
from jobrunner._outcome import decide_failure, describe_error, timeout_error
from jobrunner._policy import RetryPolicy
from jobrunner._recurrence import Recurrence, parse_recurrence
from jobrunner._validation import SYSTEM_USER
from jobrunner.backends.temporal import _schedules
from jobrunner.backends.temporal._types import (
    FINISH_ACTIVITY,
    PROGRESS_ACTIVITY,
    REGISTER_RUN_ACTIVITY,
    RESOLVE_POLICY_ACTIVITY,
    RUN_ACTIVITY,
    SIGNAL_PROGRESS_REPORTED,
    FinishInput,
    PolicyInput,
    ProgressInput,
    RegisterRunInput,
    RunInput,
)
from jobrunner.registry import HandlerSpec

if TYPE_CHECKING:
    from jobrunner.backends.temporal._runner import TemporalJobRunner

logger = logging.getLogger("jobrunner.temporal")


def policy_input(spec: HandlerSpec | None) -> PolicyInput:
    """The workflow-side description of a handler's policy (defaults when unknown)."""
    retry = spec.retry if spec is not None else RetryPolicy()
    names: list[str] = []
    for entry in retry.non_retryable_errors:
        # Temporal matches ApplicationError.type, which the activity sets to the class name.
        names.append(entry.rsplit(".", 1)[-1] if isinstance(entry, str) else entry.__name__)
    names.append("NonRetryable")
    return PolicyInput(
        max_attempts=retry.max_attempts,
        initial_interval=retry.initial_seconds,
        backoff_coefficient=float(retry.backoff_coefficient),
        max_interval=retry.max_seconds,
        jitter=retry.jitter,
        non_retryable_error_types=names,
        timeout=spec.timeout if spec is not None else 300.0,
    )


class JobActivities:
    """Activity implementations bound to a runner (database, registry) and a worker."""

    def __init__(
        self,
        runner: TemporalJobRunner,
        *,
        worker_id: uuid.UUID,
        executor: Executor | None,
        heartbeat_every: float = 1.0,
    ) -> None:
        self.runner = runner
        self.db = runner.db
        self.q = runner.db.queries
        self.store = runner.store
        self.worker_id = worker_id
        self.executor = executor
        self.heartbeat_every = heartbeat_every
        self.running: dict[str, asyncio.Task[Any]] = {}

    def definitions(self) -> list[Any]:
        """The activity callables to register on a Temporal worker."""
        return [
            self.run_job,
            self.finish_job,
            self.register_run,
            self.signal_progress,
            self.resolve_policy,
        ]

    # -- the handler ------------------------------------------------------------------------
    @activity.defn(name=RUN_ACTIVITY)
    async def run_job(self, inp: RunInput) -> Any:
        """One attempt of the job's handler."""
        info = activity.info()
        tenant = uuid.UUID(inp.tenant)
        job_id = uuid.UUID(inp.job_id)
        spec = self.runner.registry.find(inp.name)
        # The workflow applied inp.policy; decide with the same numbers (the local spec keeps
        # exception types for subclass matching when it agrees).
        policy = (
            spec.retry
            if spec is not None and spec.retry.max_attempts == inp.policy.max_attempts
            else _policy_from_input(inp.policy)
        )
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.q.temporal_begin_attempt,
                {
                    "tenant": tenant,
                    "job_id": job_id,
                    "attempt": info.attempt,
                    "max_attempts": policy.max_attempts,
                    "worker_id": self.worker_id,
                    "workflow_id": info.workflow_id,
                    "run_id": info.workflow_run_id,
                },
            )
            row = await cur.fetchone()
        if row is None:
            return await self._already_final(tenant, job_id)
        token = int(row["lease_token"])
        ctx = JobContext(
            job_id=job_id,
            name=inp.name,
            tenant=tenant,
            attempt=info.attempt,
            max_attempts=policy.max_attempts,
            queue=row["queue"],
            metadata=dict(row["metadata"] or {}),
            schedule_id=row["schedule_id"],
            lease_token=token,
            _sink=_ProgressMirror(self.store, info.workflow_id or "", info.workflow_run_id),
        )
        started_wall = time.time()
        started = time.monotonic()
        if spec is None:
            exc = HandlerNotFoundError(inp.name)
            await self._record_failure(
                ctx, describe_error(exc).to_json(), None, started_wall, started
            )
            raise ApplicationError(str(exc), type="HandlerNotFoundError", non_retryable=True)
        beat = asyncio.create_task(self._heartbeat(ctx), name=f"jobrunner-heartbeat-{job_id}")
        task = asyncio.current_task()
        if task is not None:
            self.running[inp.job_id] = task
        try:
            result = await self._invoke(spec, ctx, inp.data, inp.policy.timeout)
            text = None if result is None else json.dumps(result, allow_nan=False)
        except asyncio.CancelledError:
            ctx.mark_cancelled()
            details = activity.cancellation_details()
            if details is not None and details.cancel_requested:
                # The job was cancelled (cancel_job or the cancelJob signal): whoever cancelled
                # marks the row; this attempt records nothing more.
                raise
            # Stopped for another reason (worker shutdown past its grace, the server gave up on
            # this attempt): a failed attempt that the policy retries, not a cancelled job.
            stop = UnavailableError("the attempt was interrupted before the handler finished")
            decision = decide_failure(stop, attempt=info.attempt, policy=policy)
            await self._record_failure(
                ctx, decision.error.to_json(), decision.retry_in, started_wall, started
            )
            raise _as_application_error(stop, decision.retry_in) from None
        except Exception as exc:  # noqa: BLE001 - every handler failure is recorded
            decision = decide_failure(exc, attempt=info.attempt, policy=policy)
            await self._record_failure(
                ctx, decision.error.to_json(), decision.retry_in, started_wall, started
            )
            raise _as_application_error(exc, decision.retry_in) from None
        finally:
            beat.cancel()
            ctx.cancel_pending_flush()
            self.running.pop(inp.job_id, None)
        await ctx.flush_progress()
        async with self.db.connection() as conn:
            await conn.execute(
                self.q.temporal_complete,
                {
                    "tenant": tenant,
                    "job_id": job_id,
                    "token": token,
                    "result": text,
                    "started_at": datetime.fromtimestamp(started_wall, UTC),
                    "duration_ms": (time.monotonic() - started) * 1000,
                    "worker_id": str(self.worker_id),
                },
            )
        return None if text is None else json.loads(text)

    async def _invoke(
        self, spec: HandlerSpec, ctx: JobContext, data: dict[str, Any], timeout: float
    ) -> Any:
        if spec.is_async:
            try:
                async with asyncio.timeout(timeout) as scope:
                    return await spec.handler(ctx, data)
            except TimeoutError:
                if scope.expired():
                    raise timeout_error(timeout) from None
                raise
        loop = asyncio.get_running_loop()
        sync_ctx = SyncJobContext(ctx, loop)
        handler: Any = spec.handler
        future = loop.run_in_executor(self.executor, handler, sync_ctx, data)
        try:
            async with asyncio.timeout(timeout) as scope:
                return await asyncio.shield(future)
        except TimeoutError:
            if scope.expired():
                # A thread cannot be killed: flag it and discard whatever it returns later.
                ctx.mark_cancelled()
                raise timeout_error(timeout) from None
            raise
        except asyncio.CancelledError:
            ctx.mark_cancelled()
            raise

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

    async def _record_failure(
        self,
        ctx: JobContext,
        error: dict[str, Any],
        retry_in: float | None,
        started_wall: float,
        started: float,
    ) -> None:
        await ctx.flush_progress()
        async with self.db.connection() as conn:
            await conn.execute(
                self.q.temporal_fail,
                {
                    "tenant": ctx.tenant,
                    "job_id": ctx.job_id,
                    "token": ctx.lease_token,
                    "error": Jsonb(error),
                    "retry_in": retry_in,
                    "started_at": datetime.fromtimestamp(started_wall, UTC),
                    "duration_ms": (time.monotonic() - started) * 1000,
                    "worker_id": str(self.worker_id),
                },
            )

    # -- bookkeeping ------------------------------------------------------------------------
    @activity.defn(name=FINISH_ACTIVITY)
    async def finish_job(self, inp: FinishInput) -> bool:
        """Record ``failed`` or ``cancelled`` unless the row is final already."""
        tenant = uuid.UUID(inp.tenant)
        job_id = uuid.UUID(inp.job_id)
        run_id = activity.info().workflow_run_id
        async with self.db.connection() as conn:
            if inp.status == "cancelled":
                cur = await conn.execute(
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
                cur = await conn.execute(
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
            return await cur.fetchone() is not None

    @activity.defn(name=REGISTER_RUN_ACTIVITY)
    async def register_run(self, inp: RegisterRunInput) -> str | None:
        """Insert the row of a run fired by a Temporal Schedule; idempotent.

        Returns ``None`` when the run goes ahead, else why it does not: its tick has its job
        already (``duplicate``: the unique ``(tenant, schedule_id, scheduled_for)`` key) or
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
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                self.q.temporal_run_exists, {"tenant": tenant, "job_id": job_id}
            )
            if await cur.fetchone() is not None:
                return None  # this activity's earlier attempt registered the run
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
            if live and tracker_id is not None:
                patch: dict[str, Any] = {}
                last = _parse_time(meta.get("last_run_at"))
                if reason is None and (last is None or tick is None or tick >= last):
                    patch = {
                        "last_run_at": _schedules.iso(tick or now),
                        "last_job_id": str(job_id),
                        "last_run_status": JobStatus.QUEUED.value,
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
        return reason

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
        async with self.db.connection() as conn:
            await conn.execute(
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
        async with self.db.connection() as conn:
            await conn.execute(
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
        return policy_input(self.runner.registry.find(name))


class _ProgressMirror:
    """The handler's JobSink: the shared JobStore, plus a signal so the workflow's
    ``getJobState`` shows the progress the row shows (best effort, never fails the handler)."""

    def __init__(self, store: JobStore, workflow_id: str, run_id: str | None) -> None:
        self.store = store
        self.workflow_id = workflow_id
        self.run_id = run_id

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


def _policy_from_input(policy: PolicyInput) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_interval=policy.initial_interval,
        backoff_coefficient=policy.backoff_coefficient,
        max_interval=policy.max_interval,
        jitter=policy.jitter,
        non_retryable_errors=tuple(policy.non_retryable_error_types),
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
