"""The generic job workflow: one workflow per job, the handler runs as its activity.

Deterministic code only: every side effect (database writes, the handler) happens in
activities (see ``_activities``), which are referred to by name so this module imports
nothing heavy into the workflow sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)
from temporalio.workflow import ActivityCancellationType

from jobrunner.backends.temporal._types import (
    CHECK_RELEASE_ACTIVITY,
    FINISH_ACTIVITY,
    PROGRESS_ACTIVITY,
    QUERY_STATE,
    REGISTER_RUN_ACTIVITY,
    REGISTERED_WAITING,
    RESOLVE_POLICY_ACTIVITY,
    RUN_ACTIVITY,
    SIGNAL_CANCEL,
    SIGNAL_PROGRESS,
    SIGNAL_PROGRESS_REPORTED,
    SIGNAL_RELEASED,
    WORKFLOW_NAME,
    FinishInput,
    JobInput,
    PolicyInput,
    ProgressInput,
    RegisterRunInput,
    ReleaseInput,
    RunInput,
)

#: Seconds the activity may run past the handler's own timeout: the activity enforces the
#: handler timeout itself (so it can record a precise error); the server-side start-to-close
#: timeout is the backstop for a worker that hangs or dies.
TIMEOUT_MARGIN = 1.0

#: Retries of the short bookkeeping activities (database writes).
_BOOKKEEPING_RETRY = TemporalRetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)
_BOOKKEEPING_TIMEOUT = timedelta(seconds=30)

#: How often a waiting workflow looks at its row when no release signal came (the signal is
#: sent by the activity whose outcome released the job; this poll covers a lost signal and a
#: release by a cancel, a lease rescue or a cascade).
RELEASE_POLL = timedelta(seconds=5)

_FINAL = ("completed", "failed", "cancelled")


def temporal_retry_policy(policy: PolicyInput) -> TemporalRetryPolicy:
    """Map jobrunner's RetryPolicy onto Temporal's (jitter has no Temporal equivalent)."""
    return TemporalRetryPolicy(
        initial_interval=timedelta(seconds=policy.initial_interval),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=timedelta(seconds=policy.max_interval),
        maximum_attempts=policy.max_attempts,
        non_retryable_error_types=list(policy.non_retryable_error_types),
    )


@workflow.defn(name=WORKFLOW_NAME)
class JobWorkflow:
    """Runs one job: its handler as an activity with the handler's retry policy and timeout.

    Signals: ``cancelJob {reason, cancelled_by}`` and ``updateProgress {progress, message}``.
    Query: ``getJobState -> {step, progress, error, started_at, completed_at}``.
    """

    def __init__(self) -> None:
        self._job_id: str | None = None
        self._tenant: str | None = None
        self._step = "queued"
        self._progress = 0
        self._message: str | None = None
        self._error: dict[str, Any] | None = None
        self._started_at: str | None = None
        self._completed_at: str | None = None
        self._cancel: dict[str, Any] | None = None
        self._activity: workflow.ActivityHandle[Any] | None = None
        self._released = False

    @workflow.run
    async def run(self, job: JobInput) -> Any:
        """Create the row of a scheduled run if needed, run the handler, record the end."""
        self._tenant = job.tenant
        if job.job_id is None:
            # A Temporal Schedule fired: this run's row does not exist yet.
            self._job_id = str(workflow.uuid4())
            skipped = await workflow.execute_activity(
                REGISTER_RUN_ACTIVITY,
                RegisterRunInput(job_id=self._job_id, job=job, scheduled_for=_scheduled_time()),
                start_to_close_timeout=_BOOKKEEPING_TIMEOUT,
                retry_policy=_BOOKKEEPING_RETRY,
            )
            if skipped == REGISTERED_WAITING:
                # depends_on_previous: the schedule's previous run is live; wait for it
                job.waiting = True
            elif skipped:
                # This tick has its job already, or the missed-tick policy drops it: no row of
                # ours exists and the handler does not run.
                self._step = "skipped"
                self._completed_at = workflow.now().isoformat()
                return {"skipped": True, "reason": skipped}
        else:
            self._job_id = job.job_id
        # Signal handlers may still be writing progress: let them finish before the workflow
        # ends (not in a ``finally``: an evicted workflow must not await anything).
        try:
            result = await self._run(job)
        except (ApplicationError, asyncio.CancelledError):
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _run(self, job: JobInput) -> Any:
        assert self._job_id is not None
        policy = job.policy
        if policy is None:
            # The producer had no handler registered: the worker's registry decides.
            policy = await workflow.execute_local_activity(
                RESOLVE_POLICY_ACTIVITY,
                job.name,
                result_type=PolicyInput,
                start_to_close_timeout=timedelta(seconds=10),
            )
        if job.waiting and self._cancel is None:
            try:
                ended = await self._wait_for_release(job)
            except asyncio.CancelledError:
                # the workflow itself was cancelled while it waited
                if self._cancel is None:
                    self._cancel = {"reason": "workflow cancelled", "cancelled_by": None}
                await self._finish_cancelled(job)
                raise
            if ended is not None:
                return ended
        if self._cancel is not None:
            return await self._finish_cancelled(job)
        self._step = "running"
        self._started_at = workflow.now().isoformat()
        self._activity = workflow.start_activity(
            RUN_ACTIVITY,
            RunInput(
                job_id=self._job_id,
                tenant=job.tenant,
                name=job.name,
                data=job.data,
                policy=policy,
            ),
            start_to_close_timeout=timedelta(seconds=policy.timeout + TIMEOUT_MARGIN),
            heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout),
            retry_policy=temporal_retry_policy(policy),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        try:
            result = await self._activity
        except asyncio.CancelledError:
            # The workflow itself was cancelled (JobRunner.cancel_job): the activity has been
            # asked to stop; record the cancellation and end as cancelled.
            if self._cancel is None:
                self._cancel = {"reason": "workflow cancelled", "cancelled_by": None}
            await self._finish_cancelled(job)
            raise
        except ActivityError as err:
            cancelled = isinstance(err.cause, CancelledError) or (
                isinstance(err.cause, ApplicationError) and err.cause.type == "JobCancelled"
            )
            if self._cancel is not None or cancelled:
                return await self._finish_cancelled(job)
            cause = err.cause
            kind, message = _describe(cause)
            self._step = "failed"
            self._error = {"type": kind, "message": message}
            self._completed_at = workflow.now().isoformat()
            # The activity recorded handler failures itself; this covers what it could not:
            # server-side timeouts and workers that died mid-attempt.
            await workflow.execute_activity(
                FINISH_ACTIVITY,
                FinishInput(
                    job_id=self._job_id,
                    tenant=job.tenant,
                    status="failed",
                    error_type=kind,
                    message=message,
                ),
                start_to_close_timeout=_BOOKKEEPING_TIMEOUT,
                retry_policy=_BOOKKEEPING_RETRY,
            )
            raise ApplicationError(
                f"job {job.name} {self._job_id} failed: {message}",
                type=kind.rsplit(".", 1)[-1] or "JobFailed",
                non_retryable=True,
            ) from err
        self._step = "completed"
        self._progress = 100
        self._completed_at = workflow.now().isoformat()
        return result

    async def _wait_for_release(self, job: JobInput) -> Any:
        """Wait while the row is ``waiting`` (dependencies not final), then until its
        ``run_at``. ``None``: run the job; else the job ended meanwhile (its dependencies
        cancelled it, or it was cancelled), and that is the workflow's result."""
        assert self._job_id is not None
        self._step = "waiting"
        while True:
            self._released = False
            state = await workflow.execute_activity(
                CHECK_RELEASE_ACTIVITY,
                ReleaseInput(job_id=self._job_id, tenant=job.tenant),
                start_to_close_timeout=_BOOKKEEPING_TIMEOUT,
                retry_policy=_BOOKKEEPING_RETRY,
            )
            status = str(state.get("status"))
            if status in _FINAL:
                # final without this workflow: cancelled by a dependency's failure, or by
                # cancel_job (whose cancel also reaches this workflow)
                self._step = status
                self._completed_at = workflow.now().isoformat()
                return {"cancelled": status == "cancelled", "status": status}
            if status != "waiting":
                break
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._released or self._cancel is not None, timeout=RELEASE_POLL
                )
            if self._cancel is not None:
                return None
        due_in = float(state.get("due_in") or 0.0)
        self._step = "queued"
        if due_in > 0:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._cancel is not None, timeout=timedelta(seconds=due_in)
                )
        return None

    async def _finish_cancelled(self, job: JobInput) -> Any:
        assert self._job_id is not None
        cancel = self._cancel or {}
        self._step = "cancelled"
        self._completed_at = workflow.now().isoformat()
        self._error = {"type": "cancelled", "message": cancel.get("reason") or "cancelled"}
        await asyncio.shield(
            workflow.execute_activity(
                FINISH_ACTIVITY,
                FinishInput(
                    job_id=self._job_id,
                    tenant=job.tenant,
                    status="cancelled",
                    error_type="cancelled",
                    message=cancel.get("reason") or "cancelled",
                    reason=cancel.get("reason"),
                    cancelled_by=cancel.get("cancelled_by"),
                ),
                start_to_close_timeout=_BOOKKEEPING_TIMEOUT,
                retry_policy=_BOOKKEEPING_RETRY,
            )
        )
        return {"cancelled": True, "reason": cancel.get("reason")}

    # -- signals and query ------------------------------------------------------------------
    @workflow.signal(name=SIGNAL_CANCEL)
    async def cancel_job(self, payload: dict[str, Any] | None = None) -> None:
        """Stop the job: the running activity is cancelled (its next heartbeat delivers it)."""
        payload = payload or {}
        if self._cancel is not None or self._step in ("completed", "failed", "cancelled"):
            return
        self._cancel = {
            "reason": _text(payload.get("reason")),
            "cancelled_by": _text(payload.get("cancelled_by", payload.get("cancelledBy"))),
        }
        if self._activity is not None and not self._activity.done():
            self._activity.cancel()

    @workflow.signal(name=SIGNAL_RELEASED)
    def released(self, payload: dict[str, Any] | None = None) -> None:
        """The job's dependencies are final: check the row now."""
        self._released = True

    @workflow.signal(name=SIGNAL_PROGRESS)
    async def update_progress(self, payload: dict[str, Any] | None = None) -> None:
        """Record progress reported from outside the handler (kept in the jobs table too)."""
        payload = payload or {}
        raw = payload.get("progress")
        if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 <= raw <= 100:
            workflow.logger.warning("updateProgress ignored: progress must be 0-100, got %r", raw)
            return
        if self._job_id is None or self._step in ("completed", "failed", "cancelled"):
            return
        self._progress = int(raw)
        self._message = _text(payload.get("message"))
        await workflow.execute_activity(
            PROGRESS_ACTIVITY,
            ProgressInput(
                job_id=self._job_id,
                tenant=self._tenant or "",
                progress=self._progress,
                message=self._message,
            ),
            start_to_close_timeout=_BOOKKEEPING_TIMEOUT,
            retry_policy=_BOOKKEEPING_RETRY,
        )

    @workflow.signal(name=SIGNAL_PROGRESS_REPORTED)
    def progress_reported(self, payload: dict[str, Any] | None = None) -> None:
        """The handler reported progress (already persisted): mirror it for the query."""
        payload = payload or {}
        raw = payload.get("progress")
        valid = isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 100
        if valid and self._step not in ("completed", "failed", "cancelled"):
            self._progress = int(raw)  # type: ignore[arg-type]
            self._message = _text(payload.get("message"))

    @workflow.query(name=QUERY_STATE)
    def get_job_state(self) -> dict[str, Any]:
        """``{step, progress, error, started_at, completed_at}`` (plus job id and message)."""
        return {
            "job_id": self._job_id,
            "step": self._step,
            "progress": self._progress,
            "message": self._message,
            "error": self._error,
            "started_at": self._started_at,
            "completed_at": self._completed_at,
        }


_SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# A scheduled workflow's id ends with its nominal time: ``<action id>-2026-12-02T08:00:00Z``.
_ID_TIME = re.compile(r"-(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$")


def _scheduled_time() -> str | None:
    """The nominal time of the tick that started this workflow (Temporal sets the
    ``TemporalScheduledStartTime`` search attribute; older servers only the id suffix)."""
    info = workflow.info()
    when = info.typed_search_attributes.get(_SCHEDULED_START)
    if when is not None:
        return when.isoformat()
    match = _ID_TIME.search(info.workflow_id)
    return match[1].replace("Z", "+00:00") if match else None


def _describe(cause: BaseException | None) -> tuple[str, str]:
    if isinstance(cause, ApplicationError):
        return (cause.type or "ApplicationError", cause.message)
    if isinstance(cause, TemporalTimeoutError):
        return ("jobrunner.JobTimeoutError", f"activity timed out ({cause.type})")
    if cause is None:
        return ("ActivityError", "activity failed")
    return (type(cause).__name__, str(cause))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:1000]
