"""MemoryStore: the queue store of the in-memory backend, in Python data structures.

It keeps the rules of :class:`~jobrunner._queue._store.QueueStore` as the PostgreSQL store
does: claims in priority, due-time and insertion order, a new lease token per claim, every
write of an attempt fenced by its token, outcomes that honour the job's attempt budget, lease
rescue, release without counting the attempt, and schedule ticks fired once each under their
missed-tick and overlap policies. So the queue worker and the schedule ticker run on it
unchanged.

Time: due times, timestamps and schedule ticks follow the store's :class:`Clock` (a
:class:`FakeClock` in tests; each move wakes listeners). Leases follow ``time.monotonic()``:
they are about the process being alive, and moving a fake clock must not expire them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn

from jobrunner._context import DURABLE_KEY, DurableStart, JobContext
from jobrunner._errors import NotSupportedError
from jobrunner._models import JobError, JobStatus, OverlapPolicy, ScheduledJob
from jobrunner._options import EnqueueOptions
from jobrunner._policy import JobPolicy
from jobrunner._queue._store import (
    AttemptRef,
    Claim,
    ClaimedJob,
    ClaimRequest,
    CompletedAttempt,
    FailedAttempt,
    FiredSchedule,
    ListenerLost,
    Notice,
    OutcomeBatch,
    Topic,
)
from jobrunner._queue._ticks import DueSchedule, iso, limit_overlap, plan_due_ticks
from jobrunner._recurrence import DEFAULT_MISFIRE_GRACE
from jobrunner.backends.memory._clock import Clock
from jobrunner.backends.memory._records import (
    CLAIMABLE,
    FINAL,
    DetailRecord,
    EdgeRecord,
    JobRecord,
    ScheduleRecord,
    roundtrip,
)
from jobrunner.backends.memory._tables import RUNNER_TYPE, MemoryTables, close_open_steps

__all__ = ["MemoryStore"]

_LEASE_EXPIRED = {
    "type": "jobrunner.LeaseExpired",
    "message": "the worker running this attempt stopped heartbeating (crashed, killed or "
    "disconnected); its lease expired",
    "traceback": None,
}
_STEP_LEASE_EXPIRED = {
    "type": "jobrunner.LeaseExpired",
    "message": "the attempt's lease expired before this step finished (its worker crashed, "
    "was killed or lost the database)",
    "traceback": None,
}
_STEP_RELEASED = {
    "type": "jobrunner.Released",
    "message": "the worker shut down before this step finished; the job was queued again",
    "traceback": None,
}


class MemoryStore(MemoryTables):
    """The in-memory :class:`~jobrunner._queue._store.QueueStore`.

    One store holds one backend's data; the runner and all its workers share it (it keeps
    nothing per worker, so :meth:`open` and :meth:`close` do nothing).

    Args:
        clock: Where time comes from.
    """

    backend = RUNNER_TYPE

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.scheduler: Callable[..., Awaitable[ScheduledJob]] | None = None
        """The runner's ``schedule_child`` (``ctx.schedule_job`` of handlers)."""
        self.attempts_run = 0
        """Attempts claimed so far."""
        subscribe = getattr(clock, "subscribe", None)
        self.unsubscribe_clock: Callable[[], None] | None = (
            subscribe(self._clock_moved) if callable(subscribe) else None
        )

    def _clock_moved(self) -> None:
        # Jobs and ticks may have fallen due: as a NOTIFY would, wake workers and tickers.
        self.changed(work=True, schedules=True)

    def describe(self) -> str:
        """The store's clock."""
        return f"clock={self.clock!r}"

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close (the data outlives every worker)."""

    # -- claiming -------------------------------------------------------------------------
    def claim_due(
        self,
        worker_id: uuid.UUID,
        queues: Collection[str] | None,
        limit: int,
        lease_seconds: float,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` due jobs of ``queues`` (``None``: every queue) in claim order."""
        now = self.clock.now()
        due = [
            j
            for j in self.jobs.values()
            if j.status in CLAIMABLE and j.run_at <= now and (queues is None or j.queue in queues)
        ]
        due.sort(key=lambda j: (-j.priority, j.run_at, j.seq))
        return [self.take(job, worker_id, lease_seconds) for job in due[:limit]]

    def take(self, job: JobRecord, worker_id: uuid.UUID, lease_seconds: float) -> ClaimedJob:
        """Start a new attempt of ``job`` (claimable) under a new lease."""
        now = self.clock.now()
        job.status = JobStatus.PROCESSING
        job.attempts += 1
        job.lease_token += 1
        job.worker_id = worker_id
        job.lease_expires = time.monotonic() + lease_seconds
        job.started_at = job.updated_at = now
        self.attempts_run += 1
        self.notify()
        return ClaimedJob(
            tenant=job.tenant,
            job_id=job.job_id,
            name=job.name,
            data=roundtrip(job.data),
            attempt=job.attempts,
            lease_token=job.lease_token,
            queue=job.queue,
            metadata=roundtrip(job.metadata),
            schedule_id=job.schedule_id,
            policy=None if job.policy is None else job.policy.to_json(),
            run_at=job.run_at,
        )

    async def claim(self, request: ClaimRequest) -> Claim:
        """Claim due jobs in claim order (there is no flow control in memory)."""
        jobs = self.claim_due(
            request.worker_id, request.queues, request.limit, request.lease_seconds
        )
        return Claim(jobs)

    async def idle_delay(self, queues: Sequence[str], *, longest: float) -> float:
        """Seconds on the store's clock until the next job of ``queues`` is due (a fake
        clock's moves wake the worker anyway)."""
        times = [
            j.run_at for j in self.jobs.values() if j.status in CLAIMABLE and j.queue in queues
        ]
        if not times:
            return longest
        ahead = (min(times) - self.clock.now()).total_seconds()
        return min(max(ahead, 0.0), longest)

    async def pin_policy(self, ref: AttemptRef, policy: JobPolicy) -> None:
        """Store ``policy`` with a job that has none (fenced by ``ref``)."""
        job = self._held(ref)
        if job is not None and job.policy is None:
            job.policy = policy
            job.max_attempts = policy.retry.max_attempts

    def _held(self, ref: AttemptRef) -> JobRecord | None:
        job = self.find(ref.tenant, ref.job_id)
        return job if job is not None and job.holds(ref.lease_token) else None

    # -- outcomes -------------------------------------------------------------------------
    async def record_outcomes(
        self, batch: OutcomeBatch, *, worker_id: uuid.UUID, per_statement: int
    ) -> None:
        """Write each outcome whose attempt still holds its job (the others are stale)."""
        now = self.clock.now()
        retrying = False
        for done in batch.completed:
            job = self._held(done.ref)
            if job is not None:
                self._complete(job, done, now, worker_id)
        for failed in batch.failed:
            job = self._held(failed.ref)
            if job is not None:
                retrying = self._fail(job, failed, now, worker_id) or retrying
        self.changed(work=retrying)

    def _complete(
        self, job: JobRecord, done: CompletedAttempt, now: datetime, worker_id: uuid.UUID
    ) -> None:
        job.status = JobStatus.COMPLETED
        job.result = None if done.result_json is None else json.loads(done.result_json)
        job.error = None
        job.progress = 100
        job.completed_at = job.updated_at = now
        job.worker_id = job.lease_expires = None
        job.details.append(
            DetailRecord(
                uuid.uuid4(),
                "attempt",
                JobStatus.COMPLETED,
                None,
                now,
                job.attempts,
                _attempt_meta(job, done.duration_ms, worker_id),
            )
        )
        self.release_dependents(job)

    def _fail(
        self, job: JobRecord, failed: FailedAttempt, now: datetime, worker_id: uuid.UUID
    ) -> bool:
        """Record a failed attempt; ``True`` when the job will be retried."""
        error_json = json.loads(failed.error_json)
        retry = failed.retry_in is not None and job.attempts < job.max_attempts
        meta = _attempt_meta(job, failed.duration_ms, worker_id)
        job.error = JobError.from_json(error_json)
        job.updated_at = now
        job.worker_id = job.lease_expires = None
        if retry and failed.retry_in is not None:
            job.status = JobStatus.RETRYING
            job.run_at = now + timedelta(seconds=failed.retry_in)
            meta["next_run_at"] = iso(job.run_at)
        else:
            job.status = JobStatus.FAILED
            job.completed_at = now
            meta["next_run_at"] = None
        close_open_steps(job, JobStatus.FAILED, error_json, now)
        job.details.append(
            DetailRecord(
                uuid.uuid4(), "attempt", JobStatus.FAILED, error_json, now, job.attempts, meta
            )
        )
        if not retry:
            self.release_dependents(job)
        return retry

    async def release(self, refs: Sequence[AttemptRef]) -> None:
        """Queue unfinished attempts' jobs again without counting the attempt."""
        now = self.clock.now()
        for ref in refs:
            job = self._held(ref)
            if job is None:
                continue
            job.status = JobStatus.QUEUED
            job.attempts = max(job.attempts - 1, 0)
            job.run_at = job.updated_at = now
            job.progress, job.progress_message = 0, None
            job.worker_id = job.lease_expires = None
            close_open_steps(job, JobStatus.CANCELLED, _STEP_RELEASED, now, released=True)
        self.changed(work=True)

    # -- liveness -------------------------------------------------------------------------
    async def heartbeat(self, worker_id: uuid.UUID, lease_seconds: float) -> list[AttemptRef]:
        """Extend the leases ``worker_id`` holds; return them."""
        expires = time.monotonic() + lease_seconds
        held = []
        for job in self.jobs.values():
            if job.status is JobStatus.PROCESSING and job.worker_id == worker_id:
                job.lease_expires = expires
                held.append(AttemptRef(job.tenant, job.job_id, job.lease_token))
        return held

    async def rescue_expired(self) -> int:
        """Re-queue (or fail, without attempts left) jobs whose lease ran out."""
        moment = time.monotonic()
        now = self.clock.now()
        rescued = 0
        for job in list(self.jobs.values()):
            if job.status is not JobStatus.PROCESSING or job.lease_expires is None:
                continue
            if job.lease_expires >= moment:
                continue
            final = job.attempts >= job.max_attempts
            job.status = JobStatus.FAILED if final else JobStatus.RETRYING
            job.run_at = job.updated_at = now
            job.completed_at = now if final else None
            job.error = JobError.from_json(_LEASE_EXPIRED)
            if not final:  # back in the queue, the job starts over
                job.progress, job.progress_message = 0, None
            job.worker_id = job.lease_expires = None
            close_open_steps(job, JobStatus.FAILED, _STEP_LEASE_EXPIRED, now, lease_expired=True)
            job.details.append(
                DetailRecord(
                    uuid.uuid4(),
                    "attempt",
                    JobStatus.FAILED,
                    dict(_LEASE_EXPIRED),
                    now,
                    job.attempts,
                    {"lease_expired": True},
                )
            )
            if final:
                self.release_dependents(job)
            rescued += 1
        if rescued:
            self.changed(work=True)
        return rescued

    # -- notifications --------------------------------------------------------------------
    async def listen(
        self,
        topics: frozenset[Topic],
        deliver: Callable[[Notice], None],
        *,
        ready: Callable[[], None],
        probe_interval: float | None = None,
    ) -> NoReturn:
        """Deliver notices of ``topics`` until cancelled (an in-memory listener is never
        lost, so nothing needs probing)."""
        remove = self.add_listener(topics, deliver)
        try:
            ready()
            forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            await forever
        finally:
            remove()
        raise ListenerLost("the in-memory listener stopped")

    # -- progress and steps (JobSink) -----------------------------------------------------
    async def save_progress(self, ctx: JobContext, progress: int, message: str | None) -> None:
        """Progress of the attempt holding the job; ignored once it is over."""
        job = self._held(AttemptRef(ctx.tenant, ctx.job_id, ctx.lease_token))
        if job is not None:
            job.progress, job.progress_message = progress, message
            job.updated_at = self.clock.now()
            self.notify()

    async def start_step(self, ctx: JobContext, name: str) -> uuid.UUID:
        """A ``processing`` step row; once the attempt is over nothing is written and ``ctx``
        is marked cancelled."""
        detail_id = uuid.uuid4()
        job = self._held(AttemptRef(ctx.tenant, ctx.job_id, ctx.lease_token))
        if job is None:
            ctx.mark_cancelled()
            return detail_id
        now = self.clock.now()
        job.details.append(
            DetailRecord(
                detail_id,
                name,
                JobStatus.PROCESSING,
                None,
                now,
                ctx.attempt,
                {"started_at": now.isoformat()},
            )
        )
        self.notify()
        return detail_id

    async def finish_step(
        self, ctx: JobContext, detail_id: uuid.UUID, *, ok: bool, result: Any, error: Any
    ) -> None:
        """Close a step row of the attempt holding the job; a no-op once it is over."""
        job = self._held(AttemptRef(ctx.tenant, ctx.job_id, ctx.lease_token))
        if job is None:
            return
        payload = result if ok else error
        try:
            stored = roundtrip(payload)
        except (TypeError, ValueError):
            stored = {"repr": repr(payload)[:2000]}
        now = self.clock.now()
        for detail in job.details:
            if detail.detail_id == detail_id and detail.status is JobStatus.PROCESSING:
                detail.status = JobStatus.COMPLETED if ok else JobStatus.FAILED
                detail.result = stored
                detail.processed_at = now
                detail.metadata["finished_at"] = now.isoformat()
        self.notify()

    async def begin_durable_step(self, ctx: JobContext, name: str) -> DurableStart:
        """The job's completed row of durable step ``name`` (any attempt's), or a new
        ``processing`` row; ``fenced`` (nothing read or written) once the attempt is over."""
        job = self._held(AttemptRef(ctx.tenant, ctx.job_id, ctx.lease_token))
        if job is None:
            ctx.mark_cancelled()
            return DurableStart("fenced")
        for detail in job.details:
            if (
                detail.step_name == name
                and detail.status is JobStatus.COMPLETED
                and detail.metadata.get(DURABLE_KEY) is True
            ):
                return DurableStart("stored", result=roundtrip(detail.result))
        detail_id = uuid.uuid4()
        now = self.clock.now()
        job.details.append(
            DetailRecord(
                detail_id,
                name,
                JobStatus.PROCESSING,
                None,
                now,
                ctx.attempt,
                {"started_at": now.isoformat(), DURABLE_KEY: True},
            )
        )
        self.notify()
        return DurableStart("started", detail_id=detail_id)

    async def complete_durable_step(
        self, ctx: JobContext, detail_id: uuid.UUID, result_json: str | None, *, tries: int
    ) -> bool:
        """Store a durable step's result; ``False`` (nothing written) once the attempt is
        over."""
        job = self._held(AttemptRef(ctx.tenant, ctx.job_id, ctx.lease_token))
        if job is None:
            return False
        now = self.clock.now()
        for detail in job.details:
            if detail.detail_id == detail_id and detail.status is JobStatus.PROCESSING:
                detail.status = JobStatus.COMPLETED
                detail.result = None if result_json is None else json.loads(result_json)
                detail.processed_at = now
                detail.metadata.update(finished_at=now.isoformat(), tries=tries)
                self.notify()
                return True
        return False

    # -- recurring schedules: ticks -------------------------------------------------------
    def fire_due(
        self,
        now: datetime | None = None,
        *,
        limit: int | None = None,
        grace: timedelta = DEFAULT_MISFIRE_GRACE,
    ) -> list[FiredSchedule]:
        """Fire the due ticks of every due schedule (at most ``limit``), at ``now`` (default:
        the clock's time), each tick one job."""
        when = self.clock.now() if now is None else now
        due = sorted(
            (s for s in self.schedules.values() if not s.paused and s.next_run_at <= when),
            key=lambda s: s.next_run_at,
        )
        fired = [self._fire_schedule(s, when, grace) for s in due[:limit]]
        if fired:
            self.changed(work=any(f.jobs for f in fired))
        return fired

    def _fire_schedule(
        self, schedule: ScheduleRecord, now: datetime, grace: timedelta
    ) -> FiredSchedule:
        tracker = schedule.tracker
        plan = plan_due_ticks(
            DueSchedule(
                schedule_id=tracker.job_id,
                name=schedule.name,
                expression=schedule.rec.expression,
                timezone=schedule.rec.timezone,
                next_run_at=schedule.next_run_at,
                missed_ticks=schedule.missed_ticks,
                max_catch_up=schedule.max_catch_up,
                overlap=schedule.overlap,
            ),
            now,
            grace,
        )
        fire_times, skipped = list(plan.fire_times), plan.skipped
        if fire_times and schedule.overlap is OverlapPolicy.SKIP:
            fire_times, skipped = limit_overlap(
                fire_times, skipped, live=self._has_live_run(schedule)
            )
        inserted = [(self._fire(schedule, tick).job_id, tick) for tick in fire_times]
        schedule.skipped_ticks += skipped
        schedule.next_run_at = plan.next_run_at
        self.sync_tracker(schedule)
        return FiredSchedule(tracker.tenant, tracker.job_id, inserted, skipped, plan.next_run_at)

    def _has_live_run(self, schedule: ScheduleRecord) -> bool:
        tracker = schedule.tracker
        return any(
            j.tenant == tracker.tenant and j.schedule_id == tracker.job_id and not j.tracker
            for j in self.live_jobs()
        )

    def _fire(self, schedule: ScheduleRecord, tick: datetime) -> JobRecord:
        tracker = schedule.tracker
        now = self.clock.now()
        job = JobRecord(
            tenant=tracker.tenant,
            job_id=uuid.uuid4(),
            name=schedule.name,
            data=roundtrip(schedule.data),
            metadata={
                **schedule.user_metadata,
                "schedule_id": str(tracker.job_id),
                "scheduled_for": iso(tick),
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
            seq=self.next_seq(),
            schedule_id=tracker.job_id,
            scheduled_for=tick,
        )
        previous = (
            None
            if schedule.last_job_id is None
            else self.jobs.get((tracker.tenant, schedule.last_job_id))
        )
        if schedule.depends_on_previous and previous is not None and previous.status not in FINAL:
            # as 0012's schedule ticks: waits for the previous tick's job, whatever its outcome
            edge = EdgeRecord(previous.job_id, job.job_id, run_on_failure=True)
            self.dependents.setdefault(previous.key, []).append(edge)
            self.dependencies.setdefault(job.key, []).append(edge)
            job.dependencies_left = 1
            job.status = JobStatus.WAITING
        self.jobs[job.key] = job
        schedule.last_run_at = tick
        schedule.last_job_id = job.job_id
        return job

    # -- dependencies and children (DependencySink) ----------------------------------------
    async def dependency_results(self, ctx: JobContext) -> dict[uuid.UUID, Any]:
        """``{job_id: result}`` of the job's dependencies."""
        return self.dependency_results_of(ctx.tenant, ctx.job_id)

    async def schedule_child(
        self,
        ctx: JobContext,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """``ctx.schedule_job`` through the runner that made this store."""
        if self.scheduler is None:
            raise NotSupportedError("this store has no runner to enqueue child jobs")
        return await self.scheduler(ctx, name, data, run_at, options)

    async def fire_due_ticks(
        self, *, now: datetime | None, limit: int, grace: timedelta
    ) -> list[FiredSchedule]:
        """See :meth:`fire_due`."""
        return self.fire_due(now, limit=limit, grace=grace)

    async def seconds_until_next_tick(self, *, now: datetime | None) -> float | None:
        """Seconds on the store's clock until the earliest unpaused tick."""
        tick = self.next_tick_at()
        if tick is None:
            return None
        return (tick - (self.clock.now() if now is None else now)).total_seconds()


def _attempt_meta(job: JobRecord, duration_ms: float, worker_id: uuid.UUID) -> dict[str, Any]:
    return {
        "started_at": iso(job.started_at),
        "duration_ms": round(duration_ms, 3),
        "worker_id": str(worker_id),
    }
