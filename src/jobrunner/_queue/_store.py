"""The storage contract of the queue: what the worker and the schedule ticker need from a store.

A store owns every statement of the queue's hot paths; the worker and the ticker only call
the typed methods of :class:`QueueStore` with the typed rows and outcomes below, so the same
worker, ticker and execution core run on every store. The shape follows procrastinate's
connector (a store is faked, never the application) and River's ``riverdriver`` (typed
parameters and rows per operation, a listener of its own).

The rules every store keeps (docs/concepts.md, "The attempt lifecycle"):

* **Leases and fencing.** A claim takes a lease until ``now + lease_seconds`` and a new lease
  token for the job. Every write of an attempt (outcome, release, pinned policy, progress, step)
  presents ``(tenant, job id, lease token)`` and changes nothing once the job has moved on (the
  lease expired and was rescued, the job was cancelled or claimed again).
* **Claim order.** Due jobs (``run_at <= now``) of the requested queues, by priority (highest
  first), then ``run_at``, then job id; with flow control on (limits, pauses, fair claiming)
  the store's gate decides which of them may start (:attr:`Claim.gated`).
* **Retries are the job's policy.** A failed attempt with ``retry_in`` is retried only while
  the job has attempts left; otherwise it fails for good, whatever the worker sent.
* **Errors.** Storage failures are raised as :class:`~jobrunner.UnavailableError` (the same
  call may succeed later) or :class:`~jobrunner.DatabaseError` (this call can never succeed as
  sent: the worker then writes a batch one outcome at a time); never as a driver's exception.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol

from jobrunner._context import JobSink
from jobrunner._policy import JobPolicy

__all__ = [
    "AttemptRef",
    "CancelRequested",
    "Claim",
    "ClaimRequest",
    "ClaimedJob",
    "CompletedAttempt",
    "FailedAttempt",
    "FiredSchedule",
    "ListenerLost",
    "Notice",
    "OutcomeBatch",
    "QueueStore",
    "SchedulesChanged",
    "Topic",
    "WorkAvailable",
]


# -- attempts -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttemptRef:
    """One attempt of one job: the job and the lease token its claim took."""

    tenant: uuid.UUID
    job_id: uuid.UUID
    lease_token: int

    @property
    def key(self) -> tuple[uuid.UUID, int]:
        """``(job_id, lease_token)``: how a worker keys its running attempts."""
        return (self.job_id, self.lease_token)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What one claim asks for."""

    worker_id: uuid.UUID
    """Written with the claimed jobs; :meth:`QueueStore.heartbeat` extends this id's leases."""
    queues: tuple[str, ...]
    limit: int
    """Most jobs to claim."""
    lease_seconds: float
    fair: bool | None = None
    """Claim round-robin between tenants (``True``), in priority order across tenants
    (``False``), or as the backend's own setting says (``None``)."""


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a claim handed to the worker, with the attempt it starts."""

    tenant: uuid.UUID
    job_id: uuid.UUID
    name: str
    data: dict[str, Any]
    attempt: int
    """This attempt's number (1 for the first run)."""
    lease_token: int
    queue: str
    metadata: dict[str, Any]
    schedule_id: uuid.UUID | None
    policy: dict[str, Any] | None
    """The policy stored with the job (``JobPolicy.to_json``); ``None``: it has none yet and
    the worker pins its own (:meth:`QueueStore.pin_policy`)."""
    run_at: datetime | None = None
    """When the job fell due (its queue wait is measured from here)."""

    @property
    def ref(self) -> AttemptRef:
        """The attempt this claim started."""
        return AttemptRef(self.tenant, self.job_id, self.lease_token)


@dataclass(frozen=True, slots=True)
class Claim:
    """The result of :meth:`QueueStore.claim`."""

    jobs: list[ClaimedJob]
    gated: bool = False
    """Flow control decided this claim: it may stop short of ``limit`` although more jobs are
    due, and an attempt that ends frees capacity a blocked claim may now use."""


# -- outcomes -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CompletedAttempt:
    """An attempt whose handler returned."""

    ref: AttemptRef
    result_json: str | None
    """The result as storable JSON text (``_execution.storable_result``)."""
    started_at: float
    """Wall-clock start of the attempt (epoch seconds)."""
    duration_ms: float


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """An attempt that failed; retried in ``retry_in`` seconds while attempts remain."""

    ref: AttemptRef
    error_json: str
    """The :class:`~jobrunner.JobError` as JSON text."""
    retry_in: float | None
    """Seconds until the next attempt; ``None``: failed for good."""
    started_at: float
    duration_ms: float


@dataclass(slots=True)
class OutcomeBatch:
    """Outcomes buffered by a worker and written together."""

    completed: list[CompletedAttempt] = field(default_factory=list)
    failed: list[FailedAttempt] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.completed) + len(self.failed)

    def keys(self) -> set[tuple[uuid.UUID, int]]:
        """The ``(job_id, lease_token)`` of every outcome in the batch."""
        return {c.ref.key for c in self.completed} | {f.ref.key for f in self.failed}

    def singles(self) -> list[OutcomeBatch]:
        """One batch per outcome (to isolate a value the store refuses)."""
        return [OutcomeBatch(completed=[c]) for c in self.completed] + [
            OutcomeBatch(failed=[f]) for f in self.failed
        ]


# -- notifications ------------------------------------------------------------------------
class Topic(enum.Enum):
    """What a listener subscribes to."""

    WORK = "work"
    """Jobs were enqueued, re-queued or made retryable, or flow control changed."""
    CANCELS = "cancels"
    """Jobs were cancelled (running attempts must stop)."""
    SCHEDULES = "schedules"
    """A recurring schedule was created, changed, paused, resumed or removed."""


@dataclass(frozen=True, slots=True)
class WorkAvailable:
    """A claim may find work now (:attr:`Topic.WORK`)."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """A job was cancelled (:attr:`Topic.CANCELS`)."""

    job_id: uuid.UUID
    fence: int | None
    """The lease token the cancel set: attempts with an older token stop, a retry claimed
    after the cancel (a newer token) keeps running. ``None``: every attempt of the job."""

    def stops(self, job_id: uuid.UUID, lease_token: int) -> bool:
        """Whether the attempt ``(job_id, lease_token)`` must stop."""
        return job_id == self.job_id and (self.fence is None or lease_token < self.fence)


@dataclass(frozen=True, slots=True)
class SchedulesChanged:
    """Look for due ticks again (:attr:`Topic.SCHEDULES`)."""


Notice = WorkAvailable | CancelRequested | SchedulesChanged


class ListenerLost(Exception):
    """A listener stopped delivering (connection lost, or a probe went unanswered).

    Internal to the queue: the worker and the ticker catch it and listen again; it never
    reaches users (so it is not one of the package's typed errors).
    """


# -- schedules ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FiredSchedule:
    """What firing one due schedule did."""

    tenant: uuid.UUID
    schedule_id: uuid.UUID
    jobs: list[tuple[uuid.UUID, datetime]] = field(default_factory=list)
    """``(job_id, tick)`` of every job inserted, oldest tick first."""
    skipped: int = 0
    """Due ticks not fired (missed-tick or overlap policy, or already fired elsewhere)."""
    next_run_at: datetime | None = None
    """The schedule's new next tick."""


# -- the contract -------------------------------------------------------------------------
class QueueStore(JobSink, Protocol):
    """Everything the worker and the schedule ticker need from storage.

    A store object may keep resources dedicated to one worker's hot loops (the PostgreSQL
    store keeps a claim and a flush connection): a worker gets its own from its runner,
    :meth:`open` prepares it and :meth:`close` releases it. The progress and step writes of
    :class:`~jobrunner._context.JobSink` are fenced by the attempt's lease token.
    """

    @property
    def backend(self) -> str:
        """The backend's name (``jobs.runner_type`` of the jobs it claims)."""

    def describe(self) -> str:
        """Where the data lives, for the worker's start-up line (never a secret)."""

    async def open(self) -> None:
        """Make the store usable (start the runner, connect); a failure that waiting cannot
        fix raises. Idempotent."""

    async def close(self) -> None:
        """Release what :meth:`open` and the hot paths took. Idempotent; never raises."""

    # -- claiming -------------------------------------------------------------------------
    async def claim(self, request: ClaimRequest) -> Claim:
        """Claim due jobs in claim order, through the flow-control gate when it is on.

        Each claimed job is ``processing`` under a new lease (its attempt count and lease
        token incremented, its worker id and lease expiry set).
        """

    async def idle_delay(self, queues: Sequence[str], *, longest: float) -> float:
        """Seconds an idle worker may sleep before it claims again.

        Until the next job of ``queues`` falls due, at most ``longest``; ``0`` when one is
        due now; a short, growing backoff while flow control holds every due job back.
        """

    async def pin_policy(self, ref: AttemptRef, policy: JobPolicy) -> None:
        """Store ``policy`` with a job that has none (fenced by ``ref``); from then on it is
        the job's own."""

    # -- outcomes -------------------------------------------------------------------------
    async def record_outcomes(
        self, batch: OutcomeBatch, *, worker_id: uuid.UUID, per_statement: int
    ) -> None:
        """Write a batch of outcomes, each fenced by its attempt, at most ``per_statement``
        per statement; wake idle workers when a retry became scheduled.

        Each outcome also appends the attempt's ``job_details`` row; a failure closes the
        steps the attempt left open.

        Raises:
            DatabaseError: a value in the batch can never be stored (nothing is written).
            UnavailableError: the store could not write now; the same batch may be retried.
        """

    async def release(self, refs: Sequence[AttemptRef]) -> None:
        """Hand unfinished attempts back (shutdown, or claims nobody runs): the jobs are
        queued again without counting the attempt, their progress reset and open steps
        closed; idle workers are woken."""

    # -- liveness -------------------------------------------------------------------------
    async def heartbeat(self, worker_id: uuid.UUID, lease_seconds: float) -> list[AttemptRef]:
        """Extend every lease ``worker_id`` holds to ``now + lease_seconds``; return the
        attempts the store says it holds (a worker compares them with what it runs)."""

    async def rescue_expired(self) -> int:
        """Re-queue (or fail, with no attempts left) jobs whose lease expired, closing the
        dead attempts' open steps; wake idle workers. Returns how many were rescued."""

    # -- notifications --------------------------------------------------------------------
    async def listen(
        self,
        topics: frozenset[Topic],
        deliver: Callable[[Notice], None],
        *,
        ready: Callable[[], None],
        probe_interval: float | None = None,
    ) -> NoReturn:
        """Deliver notices of ``topics`` until the listener is lost, then raise.

        ``ready`` is called once listening: every notice sent after that is delivered (the
        caller should look for work then, notices may have been missed before). With
        ``probe_interval``, a listener silent for that long checks itself (PostgreSQL: a
        NOTIFY to its own channel that must arrive within 5 s), so a connection that died
        silently is detected.

        Raises:
            ListenerLost: the listener stopped delivering; the caller listens again.
            UnavailableError: could not listen at all.
        """

    # -- recurring schedules --------------------------------------------------------------
    async def fire_due_ticks(
        self, *, now: datetime | None, limit: int, grace: timedelta
    ) -> list[FiredSchedule]:
        """Fire the due ticks of up to ``limit`` schedules, each tick exactly one job.

        Safe to call from any number of tickers at once. ``now`` defaults to the store's
        clock; ``grace`` is the lateness beyond which a tick counts as missed. Returns one
        entry per schedule handled (fewer than ``limit``: none is left due).
        """

    async def seconds_until_next_tick(self, *, now: datetime | None) -> float | None:
        """Seconds from ``now`` (default: the store's clock) to the earliest tick of an
        unpaused schedule; ``None`` without one, ``0`` or less when one is due."""
