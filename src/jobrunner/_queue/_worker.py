"""QueueWorker: claims due jobs in batches, runs them through the execution core, records
their outcomes in batches. The same worker runs on every :class:`QueueStore`.

Liveness model: every claim takes a lease and a new lease token. The worker extends the leases
of all its jobs with one heartbeat; any worker rescues jobs whose lease expired. Every outcome
is fenced by the token, so an attempt that lost its lease can change nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from jobrunner._errors import DatabaseError, JobRunnerError, NonRetryable
from jobrunner._execution import CANCEL_GRACE, Aborted, AbortReason, Attempt, Outcome, run_attempt
from jobrunner._outcome import describe_error
from jobrunner._process import hard_exit
from jobrunner._queue._attempts import begin_attempt, outcome_record
from jobrunner._queue._settings import (
    PREFETCH_HORIZON,
    PREFETCH_MAX_WAIT,
    WorkerSettings,
)
from jobrunner._queue._store import (
    AttemptRef,
    CancelRequested,
    ClaimedJob,
    ClaimRequest,
    CompletedAttempt,
    FailedAttempt,
    Notice,
    OutcomeBatch,
    QueueStore,
    Topic,
    WorkAvailable,
)
from jobrunner._queue._ticker import ScheduleTicker
from jobrunner._runner import JobWorker
from jobrunner.registry import DEFAULT_QUEUE, HandlerSpec, JobHandlerRegistry

__all__ = ["QueueWorker"]

logger = logging.getLogger("jobrunner.worker")

_SYNC_THREAD_PREFIX = "jobrunner-sync"
#: Seconds a stopping worker keeps trying to write its last outcomes and re-queue leftovers.
_FINAL_WRITES_TIMEOUT = 10.0
#: What a failing store call may raise (stores translate their drivers' errors; a socket
#: error can still surface from a connect).
_STORE_ERRORS = (JobRunnerError, OSError)
_LISTEN_TOPICS = frozenset({Topic.WORK, Topic.CANCELS})


#: Seconds a stopping worker waits for its background loops, and for its store to close.
_LOOP_STOP_TIMEOUT = 5.0


#: Weight of the newest handler run time in the running mean that sizes the prefetch.
_RUN_TIME_WEIGHT = 0.05


@dataclass(eq=False, slots=True)
class _Held:
    """A claimed job waiting in the prefetch for a free slot (its lease is heartbeated)."""

    job: ClaimedJob
    claimed_at: float

    @property
    def key(self) -> tuple[uuid.UUID, int]:
        return self.job.ref.key


@dataclass(eq=False)
class _Running:
    attempt: Attempt
    ref: AttemptRef
    claimed_at: float
    task: asyncio.Task[None] | None = None

    @property
    def job_id(self) -> uuid.UUID:
        return self.ref.job_id

    @property
    def key(self) -> tuple[uuid.UUID, int]:
        return self.ref.key


class QueueWorker(JobWorker):
    """Runs the jobs of a queue store: claim, execute (``run_attempt``), record.

    Embed it: ``worker = runner.create_worker(concurrency=10)`` then ``await worker.run()`` in a
    task, and ``await worker.stop()`` to shut down gracefully.

    Args:
        store: The worker's own store (it may keep connections for this worker's hot loops).
        registry: Handlers to run; also the default queues.
        settings: How to claim, run and report.
    """

    def __init__(
        self, store: QueueStore, registry: JobHandlerRegistry, settings: WorkerSettings
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.worker_id = settings.worker_id
        self._started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        #: Names of background tasks that did not end at shutdown (normally none).
        self.stuck_tasks: list[str] = []
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._flush_now = asyncio.Event()
        # One outcome writer at a time: the final flush at shutdown waits for a write in flight.
        self._flush_lock = asyncio.Lock()
        # Keyed by (job id, lease token): a retry of a job claimed while its cancelled attempt
        # still cleans up is a different entry, and neither's exit can touch the other.
        self._running: dict[tuple[uuid.UUID, int], _Running] = {}
        # Claimed jobs waiting for a free slot, oldest first (bounded: see _prefetch_target).
        self._held: collections.deque[_Held] = collections.deque()
        self._held_timer: asyncio.TimerHandle | None = None
        self._releases: set[asyncio.Task[None]] = set()
        # Running mean of handler run times (seconds); None until the first one ends.
        self._run_time: float | None = None
        # Jobs started, and how many of them started while the last claim ran.
        self._started_total = 0
        self._claim_drain = 0
        self._outcomes = OutcomeBatch()
        # Attempts stopped by shutdown, handed back (not counted) once the worker stops.
        self._to_release: list[_Running] = []
        self._grace: float | None = None
        self._force = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.claimed_total = 0
        # Rows the store says we hold but we do not run, as of the last heartbeat.
        self._unknown_held: set[tuple[uuid.UUID, int]] = set()
        # Whether flow control decided the last claim (it may stop short; ends free capacity).
        self._gated = False

    # -- public ---------------------------------------------------------------------------
    @property
    def started(self) -> asyncio.Event:
        """Set once listening and ready to claim."""
        return self._started

    @property
    def queues(self) -> tuple[str, ...]:
        """Queues this worker claims from."""
        if self.settings.queues:
            return self.settings.queues
        found = {spec.queue for spec in self.registry} | {DEFAULT_QUEUE}
        return tuple(sorted(found))

    @property
    def running_jobs(self) -> int:
        """Handlers running right now."""
        return len(self._running)

    @property
    def held_jobs(self) -> int:
        """Claimed jobs waiting for a free slot (the prefetch)."""
        return len(self._held)

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop claiming; running jobs get ``grace`` seconds, then are re-queued."""
        if self._stopping.is_set() and grace is not None and grace <= 0:
            self._force.set()
        self._grace = self.settings.shutdown_grace if grace is None else grace
        if self._grace <= 0:
            self._force.set()
        self._stopping.set()
        self._wake.set()
        self._slot_free.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; then drain, release leftovers and return."""
        await self.store.open()
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.sync_threads or self.settings.concurrency,
            thread_name_prefix=_SYNC_THREAD_PREFIX,
        )
        self._log_banner()
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="jobrunner-listen"),
            asyncio.create_task(self._heartbeat_loop(), name="jobrunner-heartbeat"),
            asyncio.create_task(self._rescue_loop(), name="jobrunner-rescue"),
            asyncio.create_task(self._flush_loop(), name="jobrunner-flush"),
        ]
        if self.settings.run_scheduler:
            self._tasks.append(
                asyncio.create_task(ScheduleTicker(self.store).run(), name="jobrunner-scheduler")
            )
        try:
            await self._claim_loop()
        finally:
            await self._shutdown()

    # -- claiming -------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        backoff = 0.1
        # Claim once straight away even before listening: jobs may be waiting already.
        while not self._stopping.is_set():
            limit = self._claim_size()
            if limit <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wake.clear()
            try:
                claimed = await self._claim(limit)
                backoff = 0.1
            except _STORE_ERRORS as exc:
                logger.warning("claim failed (%s); retrying in %.1f s", exc, backoff)
                await self._sleep_or_wake(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if claimed >= limit:
                await asyncio.sleep(0)
                continue
            if claimed and self._gated:
                continue  # a fair claim may stop short of what is claimable
            # Fewer than asked: nothing else was due. No second claim to make sure; a job
            # enqueued since the claim began has set _wake (cleared before the claim).
            # The attempts just started run first: the next-due query can wait for them.
            await asyncio.sleep(0)
            await self._sleep_or_wake(await self._idle_delay())

    def _claim_size(self) -> int:
        """How many jobs to claim now (0: wait for a slot to free).

        With nothing held, one statement claims for the free slots plus the prefetch target.
        With jobs held, the worker claims again once they are down to half the target, or to
        what the slots started while the last claim ran (``ahead``), whichever is more, so the
        slots never wait for a claim's round trip while work is due; the claim is sized to
        refill the target by the time it returns. Where claims are the bottleneck (a claim
        takes longer than the slots need for the held jobs) this claims the full target back
        to back. ``claim_batch`` caps every claim.
        """
        free = max(self.settings.concurrency - len(self._running), 0)
        target = self._prefetch_target()
        held = len(self._held)
        ahead = min(self._claim_drain, target)
        if held == 0:
            want = free + target if free else 0
        elif held <= max(target // 2, ahead):
            want = free + target - max(held - ahead, 0)
        else:
            want = 0
        cap = self.settings.claim_batch
        return min(want, cap) if cap is not None else want

    def _prefetch_target(self) -> int:
        """Jobs to hold beyond the free slots: what the slots are expected to start within
        ``PREFETCH_HORIZON`` at the handlers' mean run time, at most ``prefetch``.

        None before a handler has ended (a new worker knows nothing of its jobs' run time),
        and none while flow control's limits decide the claims: a held job would count
        against its tenant's limit without running.
        """
        cap = self.settings.prefetch
        if cap <= 0 or self._run_time is None or self._gated:
            return 0
        expected = self.settings.concurrency * PREFETCH_HORIZON / max(self._run_time, 1e-6)
        return min(cap, int(expected))

    async def _idle_delay(self) -> float:
        longest = self.settings.poll_interval
        try:
            return await self.store.idle_delay(self.queues, longest=longest)
        except _STORE_ERRORS:
            return min(longest, 1.0)

    async def _sleep_or_wake(self, delay: float) -> None:
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _claim(self, limit: int) -> int:
        started_before = self._started_total
        claim = await self.store.claim(
            ClaimRequest(
                worker_id=self.worker_id,
                queues=self.queues,
                limit=limit,
                lease_seconds=float(self.settings.lease_seconds),
                fair=self.settings.fair,
            )
        )
        self._gated = claim.gated
        self._claim_drain = self._started_total - started_before
        now = time.monotonic()
        self._held.extend(_Held(job, now) for job in claim.jobs)
        self._start_held()
        if self._held and self._held_timer is None:
            self._arm_held_timer()
        self.claimed_total += len(claim.jobs)
        return len(claim.jobs)

    def _start_held(self) -> None:
        """Start held jobs in the free slots (not once stopping: they are handed back)."""
        while (
            self._held
            and len(self._running) < self.settings.concurrency
            and not self._stopping.is_set()
        ):
            held = self._held.popleft()
            self._start_job(held.job, held.claimed_at)

    def _arm_held_timer(self) -> None:
        oldest = self._held[0].claimed_at
        delay = max(oldest + PREFETCH_MAX_WAIT - time.monotonic(), 0.0)
        self._held_timer = asyncio.get_running_loop().call_later(delay, self._expire_held)

    def _expire_held(self) -> None:
        """Hand back held jobs that waited ``PREFETCH_MAX_WAIT`` without a free slot (the
        slots are busier than the run times promised): another worker may run them now."""
        self._held_timer = None
        deadline = time.monotonic() - PREFETCH_MAX_WAIT
        stale: list[AttemptRef] = []
        while self._held and self._held[0].claimed_at <= deadline:
            stale.append(self._held.popleft().job.ref)
        if stale:
            logger.info("handing back %d held jobs no slot could start in time", len(stale))
            task = asyncio.create_task(self._hand_back(stale), name="jobrunner-hand-back")
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
        if self._held:
            self._arm_held_timer()

    async def _hand_back(self, refs: list[AttemptRef]) -> None:
        try:
            await self.store.release(refs)
        except _STORE_ERRORS as exc:
            # Still leased to us: the heartbeat finds them unknown and releases them.
            logger.warning("handing back %d held jobs failed: %s", len(refs), exc)

    def _start_job(self, job: ClaimedJob, claimed_at: float) -> None:
        attempt, spec = begin_attempt(job, self.registry, self.store)
        self._started_total += 1
        running = _Running(attempt, job.ref, claimed_at)
        self._running[running.key] = running
        running.task = asyncio.create_task(
            self._execute(running, spec, pin=job.policy is None),
            name=f"jobrunner-attempt-{job.job_id}",
        )

    # -- execution ------------------------------------------------------------------------
    async def _execute(self, job: _Running, spec: HandlerSpec | None, *, pin: bool) -> None:
        attempt = job.attempt
        try:
            if pin:
                await self._pin_policy(job)
            outcome = await run_attempt(
                attempt,
                spec,
                executor=self._executor,
                rand=self.settings.rand,
                runner_type=self.store.backend,
            )
            self._record(job, outcome)
            ran = time.monotonic() - attempt.started
            mean = self._run_time
            self._run_time = ran if mean is None else mean + _RUN_TIME_WEIGHT * (ran - mean)
        finally:
            if self._running.get(job.key) is job:
                del self._running[job.key]
            self._start_held()
            self._slot_free.set()

    async def _pin_policy(self, job: _Running) -> None:
        """Store the policy this attempt runs under with a job enqueued without one."""
        try:
            await self.store.pin_policy(job.ref, job.attempt.policy)
        except _STORE_ERRORS as exc:
            # The attempt runs under the same policy either way; the next claim pins it.
            logger.warning("could not store job %s's policy: %s", job.job_id, exc)

    def _record(self, job: _Running, outcome: Outcome) -> None:
        record = outcome_record(job.ref, job.attempt, outcome)
        if isinstance(record, CompletedAttempt):
            self._outcomes.completed.append(record)
            self._schedule_flush()
        elif isinstance(record, FailedAttempt):
            self._outcomes.failed.append(record)
            self._schedule_flush()
            if record.retry_in is not None and record.retry_in < self.settings.poll_interval:
                self._arm_timer(record.retry_in)
        elif isinstance(outcome, Aborted) and outcome.reason is AbortReason.SHUTDOWN:
            self._to_release.append(job)
        # CANCELLED: the cancel recorded the outcome; LEASE_LOST: the job's new holder does.

    def _arm_timer(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay + 0.001, self._wake.set)

    # -- outcomes -------------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        if len(self._outcomes) >= self.settings.flush_max:
            self._flush_now.set()
        elif len(self._outcomes) == 1:
            loop = asyncio.get_running_loop()
            loop.call_later(self.settings.flush_interval, self._flush_now.set)

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_now.wait()
            self._flush_now.clear()
            await self._flush()

    async def _flush(self) -> None:
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        batch, self._outcomes = self._outcomes, OutcomeBatch()
        if not batch:
            return
        backoff = 0.05
        while True:
            try:
                await self._write_outcomes(batch)
                if self._gated:  # freed capacity: a limit-blocked claim may succeed now
                    self._wake.set()
                return
            except DatabaseError as exc:
                # A value the store rejects fails every retry of the whole batch: isolate it
                # rather than block every other outcome forever.
                await self._write_isolated(batch, exc)
                return
            except _STORE_ERRORS as exc:
                if self._stopped.is_set():
                    logger.error("dropping %d outcomes at exit: %s", len(batch), exc)
                    return
                logger.warning("writing outcomes failed (%s); retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _write_outcomes(self, batch: OutcomeBatch) -> None:
        await self.store.record_outcomes(
            batch, worker_id=self.worker_id, per_statement=self.settings.flush_max
        )

    async def _write_isolated(self, batch: OutcomeBatch, exc: Exception) -> None:
        """Write ``batch`` one outcome at a time after it failed with a data error.

        A completion that cannot be stored is recorded as a non-retryable failure instead; an
        outcome that still cannot be written is dropped (its lease expires, the job runs again).
        """
        logger.warning("writing %d outcomes failed (%s); writing them one by one", len(batch), exc)
        for one in batch.singles():
            only = (one.completed or one.failed)[0]
            try:
                await self._write_outcomes(one)
                continue
            except _STORE_ERRORS as err:
                problem: Exception = err
            if isinstance(problem, DatabaseError):
                # Store what can be stored: a failure with the store's complaint, no result.
                retry_in: float | None = None
                if isinstance(only, CompletedAttempt):
                    cause: BaseException = NonRetryable(
                        f"the result could not be stored: {problem}"
                    )
                else:
                    retry_in = only.retry_in
                    cause = JobRunnerError(f"the error could not be stored: {problem}")
                error = json.dumps(describe_error(cause).to_json())
                fallback = OutcomeBatch(
                    failed=[
                        FailedAttempt(only.ref, error, retry_in, only.started_at, only.duration_ms)
                    ]
                )
                try:
                    await self._write_outcomes(fallback)
                    continue
                except _STORE_ERRORS as err:
                    problem = err
            logger.error(
                "dropping the outcome of job %s (its lease will expire): %s",
                only.ref.job_id,
                problem,
            )

    # -- heartbeats and rescue ------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_every)
            sent_at = time.monotonic()
            try:
                beat = await self.store.heartbeat(
                    self.worker_id, float(self.settings.lease_seconds)
                )
            except _STORE_ERRORS as exc:
                logger.warning("heartbeat failed: %s", exc)
                continue
            held = {ref.key for ref in beat}
            pending = self._outcomes.keys()
            await self._release_orphans(beat, pending)
            for job in list(self._running.values()):
                if job.claimed_at < sent_at and job.key not in held and job.key not in pending:
                    logger.warning("job %s lost its lease; stopping its handler", job.job_id)
                    self._abort(job, AbortReason.LEASE_LOST)
            lost = [h for h in self._held if h.claimed_at < sent_at and h.key not in held]
            for gone in lost:
                logger.warning("held job %s lost its lease; not starting it", gone.job.job_id)
                self._held.remove(gone)

    async def _release_orphans(
        self, beat: Sequence[AttemptRef], pending: set[tuple[uuid.UUID, int]]
    ) -> None:
        """Hand back attempts the store says we hold but we do not run.

        A claim whose reply was lost (the connection died after the commit) leaves rows with
        our worker id that no handler runs; the heartbeat would renew their leases for as long
        as this process lives. An attempt unknown in two heartbeats in a row is released
        (fenced by its token, attempt not counted). Skipped while outcomes are being written:
        an attempt in that batch is known, just not listed in ``pending`` any more.
        """
        known = set(self._running) | pending | {h.key for h in self._held}
        unknown = {ref.key for ref in beat} - known
        if self._flush_lock.locked():
            self._unknown_held &= unknown
            return
        orphans, self._unknown_held = unknown & self._unknown_held, unknown
        if not orphans:
            return
        refs = [ref for ref in beat if ref.key in orphans]
        logger.warning(
            "releasing %d jobs claimed by this worker but not running here (a "
            "claim's reply was lost)",
            len(refs),
        )
        try:
            await self.store.release(refs)
            self._unknown_held -= orphans
        except _STORE_ERRORS as exc:
            logger.warning("releasing orphaned claims failed: %s", exc)

    async def _rescue_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rescue_every)
            try:
                rescued = await self.store.rescue_expired()
            except _STORE_ERRORS as exc:
                logger.debug("rescue scan failed: %s", exc)
                continue
            if rescued:
                logger.warning("re-queued %d jobs whose lease expired", rescued)

    def _abort(self, job: _Running, reason: AbortReason) -> None:
        job.attempt.abort(reason)

    # -- notifications --------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self.store.listen(
                    _LISTEN_TOPICS,
                    self._on_notice,
                    ready=self._on_listening,
                    probe_interval=self.settings.listen_probe_interval,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - listen again after any listener failure
                logger.warning("listener lost (%s); reconnecting in %.1f s", exc, backoff)
            self._wake.set()  # we may have missed notifications: look for work now
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _on_listening(self) -> None:
        self._started.set()
        self._wake.set()

    def _on_notice(self, notice: Notice) -> None:
        if isinstance(notice, WorkAvailable):
            self._wake.set()
        elif isinstance(notice, CancelRequested):
            self._on_cancel(notice)

    def _on_cancel(self, cancel: CancelRequested) -> None:
        """Stop the attempts of a cancelled job that are older than the cancel.

        An attempt of the same job claimed after the cancel (a retry) has a newer token and
        keeps running.
        """
        for job in list(self._running.values()):
            if cancel.stops(job.ref.job_id, job.ref.lease_token):
                logger.info("job %s cancelled; stopping its handler", cancel.job_id)
                self._abort(job, AbortReason.CANCELLED)
        for held in [h for h in self._held if cancel.stops(h.job.job_id, h.job.lease_token)]:
            logger.info("job %s cancelled before it started", cancel.job_id)
            self._held.remove(held)

    # -- shutdown -------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace if self._grace is None else self._grace
        tasks = [j.task for j in self._running.values() if j.task is not None]
        pending: set[asyncio.Task[None]] = set(tasks)
        if tasks and not self._force.is_set():
            logger.info("waiting up to %.1f s for %d running jobs", grace, len(tasks))
            forced = asyncio.create_task(self._force.wait())
            deadline = time.monotonic() + grace
            while pending and not self._force.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                waiting: set[asyncio.Future[Any]] = {*pending, forced}
                _done, pending_any = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                pending = {t for t in pending if t in pending_any}
            forced.cancel()
        for job in [j for j in self._running.values() if j.task in pending]:
            self._abort(job, AbortReason.SHUTDOWN)
        if pending:
            # Bounded: run_attempt gives a cancelled handler CANCEL_GRACE, then records anyway.
            await asyncio.wait(pending, timeout=CANCEL_GRACE + 1.0)
        leftovers, self._to_release = self._to_release, []
        refs = [j.ref for j in leftovers] + [h.job.ref for h in self._held]
        self._held.clear()
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        try:
            # Bounded: with the store away, a write in flight retries until ``_stopped``.
            async with asyncio.timeout(_FINAL_WRITES_TIMEOUT):
                await self._flush()
                if refs:
                    await self._release(refs)
                if self._releases:
                    await asyncio.wait(self._releases)
        except TimeoutError:
            logger.error(
                "could not write the last outcomes within %.0f s (database unavailable); "
                "their jobs run again when their leases expire",
                _FINAL_WRITES_TIMEOUT,
            )
        self._stopped.set()
        for task in self._tasks:
            task.cancel()
        # Bounded: a background loop that does not end when cancelled must not keep a
        # stopping worker alive (SIGTERM must end the process); the CLI exits past it.
        ended_loops, stuck_loops = await asyncio.wait(self._tasks, timeout=_LOOP_STOP_TIMEOUT)
        self.stuck_tasks = sorted(t.get_name() for t in stuck_loops)
        if stuck_loops:
            logger.error(
                "background tasks did not stop within %.0f s: %s",
                _LOOP_STOP_TIMEOUT,
                ", ".join(self.stuck_tasks),
            )
        for loop_task in ended_loops:
            if not loop_task.cancelled():
                loop_task.exception()  # retrieved: a loop's last error is not logged as unhandled
        try:
            async with asyncio.timeout(_LOOP_STOP_TIMEOUT):
                await self.store.close()
        except TimeoutError:
            logger.error("closing the store took over %.0f s; leaving it", _LOOP_STOP_TIMEOUT)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        logger.info("worker %s stopped", self.worker_id)

    async def _release(self, refs: list[AttemptRef]) -> None:
        try:
            await self.store.release(refs)
            logger.info("re-queued %d unfinished jobs", len(refs))
        except _STORE_ERRORS as exc:
            logger.error(
                "could not re-queue %d jobs (their leases will expire): %s", len(refs), exc
            )

    def exit_process(self, code: int) -> None:
        """After :meth:`run` returned, end the process if a sync handler's thread is stuck.

        The CLI calls this once the worker stopped and the runner closed. A plain ``def``
        handler that ignores ``ctx.is_cancelled()`` cannot be interrupted, and interpreter exit
        would wait for its thread forever although its job was already re-queued. Returns when
        no such thread is left (the normal case).
        """
        deadline = time.monotonic() + 1.0
        stuck = []
        for thread in threading.enumerate():
            if thread.name.startswith(_SYNC_THREAD_PREFIX + "_") and not thread.daemon:
                thread.join(max(deadline - time.monotonic(), 0.0))  # idle ones exit at once
                if thread.is_alive():
                    stuck.append(thread.name)
        if not stuck:
            return
        logger.warning(
            "exiting without waiting for %d sync handler thread(s) still running: %s",
            len(stuck),
            ", ".join(stuck),
        )
        hard_exit(code)

    def _log_banner(self) -> None:
        handlers = ", ".join(self.registry.names()) or "(none)"
        logger.info(
            "jobrunner worker %s starting: backend=%s %s queues=%s concurrency=%d lease=%.0fs "
            "handlers=[%s]",
            self.worker_id,
            self.store.backend,
            self.store.describe(),
            ",".join(self.queues),
            self.settings.concurrency,
            self.settings.lease_seconds,
            handlers,
        )
