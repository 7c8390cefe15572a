"""The in-memory backend's tables and what the runner does to them directly: enqueue, cancel,
retry, inspection, history, and the definitions of recurring schedules.

Every change wakes what waits for one (:meth:`MemoryTables.wait_for_change`) and announces
itself to listeners as the PostgreSQL backend's NOTIFYs do (:meth:`MemoryTables.publish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobrunner._errors import DependencyError
from jobrunner._jobargs import JobArgs, RecurringArgs, check_dependency_options
from jobrunner._models import (
    LIVE_STATUSES,
    RELATIONS_SHOWN,
    JobDetails,
    JobError,
    JobInfo,
    JobPage,
    JobStatus,
    Metrics,
    RelatedJob,
    ScheduledJob,
    ScheduleInfo,
)
from jobrunner._queue._store import (
    CancelRequested,
    Notice,
    SchedulesChanged,
    Topic,
    WorkAvailable,
)
from jobrunner.backends.memory._clock import Clock
from jobrunner.backends.memory._records import (
    CLAIMABLE,
    FINAL,
    DetailRecord,
    EdgeRecord,
    JobRecord,
    ScheduleRecord,
    decode_cursor,
    encode_cursor,
    handle,
    iso,
    roundtrip,
)

__all__ = ["RUNNER_TYPE", "JobFilter", "MemoryTables"]

#: ``runner_type`` of the jobs this backend holds.
RUNNER_TYPE = "memory"

_LIVE = frozenset(LIVE_STATUSES)
_WORK = WorkAvailable()
_SCHEDULES = SchedulesChanged()


@dataclass(frozen=True, slots=True)
class JobFilter:
    """``list_jobs`` filters, validated by the runner."""

    tenant: uuid.UUID | None
    """``None``: every tenant."""
    statuses: frozenset[JobStatus] | None = None
    name: str | None = None
    runner_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: str | None = None


@dataclass(eq=False)
class _Listener:
    topics: frozenset[Topic]
    deliver: Callable[[Notice], None]
    loop: asyncio.AbstractEventLoop


class MemoryTables:
    """Jobs, their details and the recurring schedules of one in-memory backend.

    Args:
        clock: Where time comes from (due times, timestamps, schedule ticks).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.jobs: dict[tuple[uuid.UUID, uuid.UUID], JobRecord] = {}
        self.schedules: dict[tuple[uuid.UUID, uuid.UUID], ScheduleRecord] = {}
        self._seq = itertools.count(1)
        #: job_dependencies: edges by (tenant, depends_on) and by (tenant, job_id).
        self.dependents: dict[tuple[uuid.UUID, uuid.UUID], list[EdgeRecord]] = {}
        self.dependencies: dict[tuple[uuid.UUID, uuid.UUID], list[EdgeRecord]] = {}
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._listeners: list[_Listener] = []

    # -- change notification --------------------------------------------------------------
    def notify(self) -> None:
        """Wake everything waiting for a change (new job, outcome, clock move, cancel)."""
        waiters, self._waiters = self._waiters, []
        running = _running_loop()
        for loop, fut in waiters:
            if loop.is_closed():
                continue
            if running is loop:
                _resolve(fut)
            else:
                loop.call_soon_threadsafe(_resolve, fut)

    async def wait_for_change(self, timeout: float | None = None) -> bool:
        """Wait until the tables change; ``False`` when ``timeout`` passed first."""
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

    def publish(self, topic: Topic, notice: Notice) -> None:
        """Deliver ``notice`` to every listener of ``topic`` (on the listener's own loop)."""
        running = _running_loop()
        for listener in list(self._listeners):
            if topic not in listener.topics or listener.loop.is_closed():
                continue
            if running is listener.loop:
                listener.deliver(notice)
            else:
                with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                    listener.loop.call_soon_threadsafe(listener.deliver, notice)

    def add_listener(
        self, topics: frozenset[Topic], deliver: Callable[[Notice], None]
    ) -> Callable[[], None]:
        """Subscribe ``deliver`` (called on the current loop); returns the unsubscribe."""
        listener = _Listener(topics, deliver, asyncio.get_running_loop())
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- enqueue --------------------------------------------------------------------------
    def new_job(self, args: JobArgs, schedule_id: uuid.UUID | None = None) -> JobRecord:
        """A job row for validated arguments (not stored yet)."""
        now = self.clock.now()
        due = args.run_at is None or args.run_at <= now
        return JobRecord(
            tenant=args.tenant,
            job_id=uuid.uuid4(),
            name=args.name,
            # Stored as the database would hand them back (JSON round trip).
            data=roundtrip(args.data),
            metadata=roundtrip(args.metadata),
            status=JobStatus.QUEUED if due else JobStatus.PENDING,
            created_at=now,
            updated_at=now,
            user_id=args.user_id,
            queue=args.queue,
            priority=args.priority,
            run_at=now if args.run_at is None else args.run_at,
            max_attempts=args.max_attempts,
            policy=args.policy,
            seq=self.next_seq(),
            singleton_key=args.singleton_key,
            schedule_id=schedule_id,
            parent_job_id=args.parent_job_id,
        )

    def next_seq(self) -> int:
        """The next insertion number."""
        return next(self._seq)

    def live_singleton(self, tenant: uuid.UUID, key: str) -> JobRecord | None:
        """The tenant's live job holding ``key``, if any."""
        for job in self.jobs.values():
            if job.tenant == tenant and job.singleton_key == key and job.status in _LIVE:
                return job
        return None

    def add(self, job: JobRecord) -> ScheduledJob:
        """Store ``job`` unless its singleton key is held (then the holder's handle)."""
        if job.singleton_key is not None:
            existing = self.live_singleton(job.tenant, job.singleton_key)
            if existing is not None:
                return handle(existing, created=False)
        self.jobs[job.key] = job
        self.changed(work=True)
        return handle(job, created=True)

    # -- dependencies ---------------------------------------------------------------------
    def check_dependencies(self, args: JobArgs) -> None:
        """Refuse ``args.depends_on`` as PostgreSQL does (before anything is stored).

        Raises:
            DependencyError: a singleton key with dependencies, an id the tenant has no job
                with, or a recurring schedule's tracker.
        """
        check_dependency_options(args)
        missing = [d for d in args.depends_on if (args.tenant, d) not in self.jobs]
        if missing:
            shown = ", ".join(sorted(str(m) for m in missing)[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DependencyError(f"depends_on names jobs this tenant does not have: {shown}{more}")
        if any(self.jobs[(args.tenant, d)].tracker for d in args.depends_on):
            raise DependencyError("depends_on names a recurring schedule; jobs depend on jobs")

    def add_dependent(self, job: JobRecord, args: JobArgs) -> ScheduledJob:
        """Store ``job`` (checked by :meth:`check_dependencies`) with its edges: waiting
        while a dependency is live, cancelled when one already failed (unless it runs on
        failure), else as enqueued."""
        live = 0
        failed: JobRecord | None = None
        for dep_id in args.depends_on:
            dep = self.jobs[(args.tenant, dep_id)]
            final = dep.status in FINAL
            edge = EdgeRecord(dep_id, job.job_id, args.run_on_failure, resolved=final)
            self.dependents.setdefault(dep.key, []).append(edge)
            self.dependencies.setdefault(job.key, []).append(edge)
            if not final:
                live += 1
            elif dep.status is not JobStatus.COMPLETED and failed is None:
                failed = dep
        job.dependencies_left = live
        if failed is not None and not args.run_on_failure:
            self._cancel_for(job, failed)
        elif live:
            job.status = JobStatus.WAITING
        self.jobs[job.key] = job
        self.changed(work=job.status in CLAIMABLE)
        return handle(job, created=True)

    def _cancel_for(self, job: JobRecord, cause: JobRecord) -> None:
        reason = f"dependency {cause.job_id} {cause.status.value}"
        now = self.clock.now()
        job.status = JobStatus.CANCELLED
        job.completed_at = job.updated_at = now
        job.error = JobError(type="cancelled", message=reason, traceback=None)
        job.metadata.update(
            {
                "cancel_reason": reason,
                "cancelled_by": "dependency",
                "cancelled_dependency": str(cause.job_id),
            }
        )

    def release_dependents(self, job: JobRecord) -> None:
        """``job`` became final: resolve its edges (each once), cancel the dependents a
        failure dooms (transitively) and release those with nothing left to wait for, as the
        trigger of migration 0012 does."""
        frontier = [job]
        released = False
        while frontier:
            doomed: list[JobRecord] = []
            for dep in frontier:
                for edge in self.dependents.get(dep.key, ()):
                    if edge.resolved:
                        continue
                    edge.resolved = True
                    waiter = self.jobs.get((dep.tenant, edge.job_id))
                    if waiter is None or waiter.status is not JobStatus.WAITING:
                        continue
                    if dep.status is not JobStatus.COMPLETED and not edge.run_on_failure:
                        self._cancel_for(waiter, dep)
                        doomed.append(waiter)
                        continue
                    waiter.dependencies_left = max(waiter.dependencies_left - 1, 0)
                    if waiter.dependencies_left == 0:
                        now = self.clock.now()
                        waiter.status = (
                            JobStatus.PENDING if waiter.run_at > now else JobStatus.QUEUED
                        )
                        waiter.updated_at = now
                        released = True
            frontier = doomed
        if released:
            self.changed(work=True)

    def relations(self, job: JobRecord) -> dict[str, list[RelatedJob]]:
        """The job's dependencies, dependents and children, by id."""

        def related(ids: list[uuid.UUID]) -> list[RelatedJob]:
            found = [self.jobs.get((job.tenant, i)) for i in sorted(set(ids))]
            return [RelatedJob(j.job_id, j.name, j.status) for j in found if j is not None][
                :RELATIONS_SHOWN
            ]

        return {
            "dependencies": related([e.depends_on for e in self.dependencies.get(job.key, ())]),
            "dependents": related([e.job_id for e in self.dependents.get(job.key, ())]),
            "children": related(
                [
                    j.job_id
                    for j in self.jobs.values()
                    if j.tenant == job.tenant and j.parent_job_id == job.job_id
                ]
            ),
        }

    def dependency_results_of(self, tenant: uuid.UUID, job_id: uuid.UUID) -> dict[uuid.UUID, Any]:
        """``{job_id: result}`` of a job's dependencies (``None`` unless completed)."""
        results: dict[uuid.UUID, Any] = {}
        for edge in sorted(self.dependencies.get((tenant, job_id), ()), key=lambda e: e.depends_on):
            dep = self.jobs.get((tenant, edge.depends_on))
            done = dep is not None and dep.status is JobStatus.COMPLETED
            results[edge.depends_on] = roundtrip(dep.result) if done and dep else None
        return results

    def changed(self, *, work: bool = False, schedules: bool = False) -> None:
        """Announce a change: waiters always, listeners of work and schedules if asked."""
        self.notify()
        if work:
            self.publish(Topic.WORK, _WORK)
        if schedules:
            self.publish(Topic.SCHEDULES, _SCHEDULES)

    # -- inspection and control -----------------------------------------------------------
    def find(self, tenant: uuid.UUID, job_id: uuid.UUID) -> JobRecord | None:
        """The tenant's job, or ``None``."""
        return self.jobs.get((tenant, job_id))

    def info(self, tenant: uuid.UUID, job_id: uuid.UUID) -> JobInfo | None:
        """``get_job_status``."""
        job = self.find(tenant, job_id)
        return None if job is None else job.info(RUNNER_TYPE)

    def cancel(
        self,
        tenant: uuid.UUID,
        job_id: uuid.UUID,
        *,
        reason: str | None,
        cancelled_by: str | None,
    ) -> bool:
        """Cancel a live job (its running attempt is told to stop) or remove a schedule."""
        job = self.find(tenant, job_id)
        if job is None:
            return False
        if job.key in self.schedules:
            return self.remove_schedule(job, reason=reason, cancelled_by=cancelled_by)
        if job.status not in _LIVE:
            return False
        previous = job.status
        now = self.clock.now()
        job.status = JobStatus.CANCELLED
        job.completed_at = job.updated_at = now
        job.error = JobError(type="cancelled", message=reason or "cancelled", traceback=None)
        job.worker_id = job.lease_expires = None
        extra = {"cancel_reason": reason, "cancelled_by": cancelled_by}
        job.metadata.update({k: v for k, v in extra.items() if v is not None})
        if previous is JobStatus.PROCESSING:
            # As on PostgreSQL: the new token fences the cancelled attempt, its open steps are
            # closed for it, and the notice stops only attempts older than the cancel.
            job.lease_token += 1
            job.details.append(
                DetailRecord(
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
            close_open_steps(job, JobStatus.CANCELLED, job.error.to_json(), now)
            self.publish(Topic.CANCELS, CancelRequested(job.job_id, job.lease_token))
        self.release_dependents(job)
        self.notify()
        return True

    def retry(self, tenant: uuid.UUID, job_id: uuid.UUID) -> bool:
        """Queue a failed or cancelled job again with a fresh attempt count."""
        job = self.find(tenant, job_id)
        if job is None or job.tracker:
            return False
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return False
        if job.singleton_key is not None and self.live_singleton(job.tenant, job.singleton_key):
            return False
        now = self.clock.now()
        job.details.append(
            DetailRecord(
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
        self.changed(work=True)
        return True

    def details(self, tenant: uuid.UUID, job_id: uuid.UUID) -> JobDetails | None:
        """``get_job_details``: the job, its data, every attempt and step row oldest first."""
        job = self.find(tenant, job_id)
        if job is None:
            return None
        steps = sorted(job.details, key=lambda d: d.processed_at)
        return JobDetails(
            job=job.info(RUNNER_TYPE),
            data=roundtrip(job.data),
            steps=[d.info() for d in steps],
            parent_job_id=job.parent_job_id,
            **self.relations(job),
        )

    def scoped(self, tenant: uuid.UUID | None) -> list[JobRecord]:
        """The tenant's jobs (``None``: everyone's)."""
        if tenant is None:
            return list(self.jobs.values())
        return [j for j in self.jobs.values() if j.tenant == tenant]

    def list_jobs(self, where: JobFilter, *, limit: int, cursor: str | None) -> JobPage:
        """``list_jobs``: newest first, with an opaque cursor for the next page."""
        after = decode_cursor(cursor)
        jobs = sorted(self.scoped(where.tenant), key=lambda j: (j.created_at, j.seq), reverse=True)
        picked: list[JobRecord] = []
        for job in jobs:
            if after is not None and (job.created_at, job.seq) >= after:
                continue
            if not _matches(job, where):
                continue
            picked.append(job)
            if len(picked) > limit:
                break
        more = len(picked) > limit
        page = picked[:limit]
        next_cursor = encode_cursor(page[-1]) if more and page else None
        return JobPage(jobs=[j.info(RUNNER_TYPE) for j in page], next_cursor=next_cursor)

    def metrics(self, tenant: uuid.UUID | None) -> Metrics:
        """``get_metrics``: counts, rates, throughput over the last hour, queue age."""
        jobs = self.scoped(tenant)
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
            by_runner_type={RUNNER_TYPE: len(jobs)} if jobs else {},
            throughput_per_minute=sorted(buckets.items()),
            oldest_queued_age_seconds=(
                max((now - min(queued)).total_seconds(), 0.0) if queued else None
            ),
        )

    def clear_history(
        self, tenant: uuid.UUID | None, *, statuses: frozenset[JobStatus], cutoff: datetime | None
    ) -> int:
        """Delete final jobs of ``statuses`` finished before ``cutoff``; returns how many."""
        doomed = [
            j
            for j in self.scoped(tenant)
            if j.status in statuses
            and j.status in FINAL
            and not (j.tracker and j.key in self.schedules)
            and (cutoff is None or (j.completed_at or j.created_at) < cutoff)
        ]
        for job in doomed:
            del self.jobs[job.key]
        if doomed:
            self.notify()
        return len(doomed)

    # -- recurring schedules --------------------------------------------------------------
    def save_schedule(self, args: RecurringArgs) -> ScheduledJob:
        """Create the schedule, or update the tenant's one with the same key in place.

        As on PostgreSQL: an update keeps the schedule's id, paused state and next tick unless
        the expression or timezone changed, which recomputes the next tick from now.
        """
        rec = args.recurrence
        template = self.new_job(args.job)
        now = self.clock.now()
        key = args.job.singleton_key or f"{template.name}:{template.tenant}"
        existing = next(
            (
                s
                for s in self.schedules.values()
                if s.tracker.tenant == template.tenant and s.key == key
            ),
            None,
        )
        if existing is not None:
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
            existing.missed_ticks, existing.overlap = args.missed_ticks, args.overlap
            existing.max_catch_up = args.max_catch_up
            existing.depends_on_previous = args.depends_on_previous
            if not same_timing:
                existing.rec = rec
                existing.next_run_at = rec.next_after(now)
            self.sync_tracker(existing)
            self.changed(schedules=True)
            return handle(existing.tracker, created=False)
        template.status = JobStatus.ACTIVE
        template.singleton_key = key
        template.tracker = True
        schedule = ScheduleRecord(
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
            missed_ticks=args.missed_ticks,
            overlap=args.overlap,
            max_catch_up=args.max_catch_up,
            next_run_at=rec.next_after(now),
            depends_on_previous=args.depends_on_previous,
        )
        self.jobs[template.key] = template
        self.schedules[template.key] = schedule
        self.sync_tracker(schedule)
        self.changed(schedules=True)
        return handle(template, created=True)

    def sync_tracker(self, schedule: ScheduleRecord) -> None:
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
                "next_run_at": None if schedule.paused else iso(schedule.next_run_at),
                "last_run_at": iso(schedule.last_run_at),
                "last_job_id": None if schedule.last_job_id is None else str(schedule.last_job_id),
                "skipped_ticks": schedule.skipped_ticks,
            }
        )
        tracker.metadata = meta

    def list_schedules(self, tenant: uuid.UUID) -> list[ScheduleInfo]:
        """The tenant's schedules (paused ones too), by name."""
        found = [s for s in self.schedules.values() if s.tracker.tenant == tenant]
        found.sort(key=lambda s: (s.name, s.key))
        return [self._schedule_info(s) for s in found]

    def _schedule_info(self, schedule: ScheduleRecord) -> ScheduleInfo:
        last = None
        if schedule.last_job_id is not None:
            last_job = self.jobs.get((schedule.tracker.tenant, schedule.last_job_id))
            last = None if last_job is None else last_job.status
        tracker = schedule.tracker
        return ScheduleInfo(
            job_id=tracker.job_id,
            tenant=tracker.tenant,
            name=schedule.name,
            expression=schedule.rec.expression,
            timezone=schedule.rec.timezone,
            singleton_key=schedule.key,
            data=roundtrip(schedule.data),
            paused=schedule.paused,
            next_run_at=None if schedule.paused else schedule.next_run_at,
            last_run_at=schedule.last_run_at,
            last_run_status=last,
            last_job_id=schedule.last_job_id,
            missed_ticks=schedule.missed_ticks,
            overlap=schedule.overlap,
            runner_type=RUNNER_TYPE,
        )

    def set_schedule_paused(self, tenant: uuid.UUID, schedule_id: uuid.UUID, paused: bool) -> bool:
        """Pause, or resume from the first tick after now (ticks that fell while paused never
        fire); ``False`` when the tenant has no such schedule."""
        schedule = self.schedules.get((tenant, schedule_id))
        if schedule is None:
            return False
        if schedule.paused != paused:
            schedule.paused = paused
            now = self.clock.now()
            if not paused and schedule.next_run_at <= now:
                schedule.next_run_at = schedule.rec.next_after(now, anchor=schedule.next_run_at)
            self.sync_tracker(schedule)
        self.changed(schedules=True)
        return True

    def remove_schedule(
        self, tracker: JobRecord, *, reason: str | None, cancelled_by: str | None
    ) -> bool:
        """As on PostgreSQL: the schedule goes, its tracker stays as cancelled history and
        runs already enqueued are left alone."""
        del self.schedules[tracker.key]
        now = self.clock.now()
        tracker.status = JobStatus.CANCELLED
        tracker.completed_at = tracker.updated_at = now
        tracker.metadata.update(
            {
                "paused": False,
                "next_run_at": None,
                "schedule_removed": True,
                "removed_at": now.isoformat(),
            }
        )
        extra = {"cancel_reason": reason, "cancelled_by": cancelled_by}
        tracker.metadata.update({k: v for k, v in extra.items() if v is not None})
        self.changed(schedules=True)
        return True

    # -- what is due ----------------------------------------------------------------------
    def next_due_at(self, *, retries_only: bool = False) -> datetime | None:
        """When the next waiting job (or only retry) becomes due, or ``None``."""
        claimable = (
            {JobStatus.RETRYING}
            if retries_only
            else {JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING}
        )
        times = [j.run_at for j in self.jobs.values() if j.status in claimable]
        return min(times) if times else None

    def next_tick_at(self) -> datetime | None:
        """When the next unpaused schedule tick comes, or ``None``."""
        times = [s.next_run_at for s in self.schedules.values() if not s.paused]
        return min(times) if times else None

    def make_retries_due(self) -> int:
        """Move every waiting retry's ``run_at`` to now (a drain on a real clock)."""
        now = self.clock.now()
        moved = 0
        for job in self.jobs.values():
            if job.status is JobStatus.RETRYING and job.run_at > now:
                job.run_at = now
                moved += 1
        if moved:
            self.changed(work=True)
        return moved

    @property
    def running_count(self) -> int:
        """Attempts running right now (jobs ``processing``)."""
        return sum(1 for j in self.jobs.values() if j.status is JobStatus.PROCESSING)

    def live_jobs(self, queues: Sequence[str] | None = None) -> list[JobRecord]:
        """Jobs not final yet (trackers aside), optionally of some queues."""
        return [
            j
            for j in self.jobs.values()
            if j.status in _LIVE and (queues is None or j.queue in queues)
        ]


def close_open_steps(
    job: JobRecord, status: JobStatus, result: object, now: datetime, **flags: bool
) -> None:
    """Close the steps an attempt left open (it cannot close them itself any more); ``flags``
    are added to their metadata (``released``, ``lease_expired``)."""
    for detail in job.details:
        if detail.status is JobStatus.PROCESSING:
            detail.status = status
            detail.result = result
            detail.processed_at = now
            detail.metadata.update({"finished_at": now.isoformat(), **flags})


def _matches(job: JobRecord, where: JobFilter) -> bool:
    if where.statuses is not None and job.status not in where.statuses:
        return False
    if where.name is not None and job.name != where.name:
        return False
    if where.runner_type is not None and where.runner_type != RUNNER_TYPE:
        return False
    if where.created_after is not None and job.created_at < where.created_after:
        return False
    if where.created_before is not None and job.created_at >= where.created_before:
        return False
    return not where.search or _found(job, where.search)


def _found(job: JobRecord, search: str) -> bool:
    """As PostgreSQL's list_jobs: name, id, error message or error type (case-insensitive)."""
    needle = search.lower()
    fields = [job.name, str(job.job_id)]
    if job.error is not None:
        fields += [job.error.message, job.error.type]
    return any(needle in f.lower() for f in fields)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
