"""PostgresWorker: claims due jobs in batches, runs their handlers, records outcomes in batches.

Liveness model: every claim takes a lease (``lease_expires_at``) and bumps the job's
``lease_token``. The worker extends the leases of all its jobs with one heartbeat statement;
any worker rescues jobs whose lease expired. Every outcome statement is fenced by the token,
so an attempt that lost its lease can change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from jobrunner._context import JobContext
from jobrunner._db._errors import translate_errors
from jobrunner._errors import (
    DatabaseError,
    InvalidArgumentError,
    JobRunnerError,
    NonRetryable,
)
from jobrunner._execution import (
    CANCEL_GRACE,
    AbortReason,
    Attempt,
    Completed,
    Failed,
    Outcome,
    run_attempt,
)
from jobrunner._limits import MAX_LEASE_SECONDS, MAX_WORKER_COUNT, MAX_WORKER_INTERVAL_SECONDS
from jobrunner._outcome import describe_error
from jobrunner._policy import JobPolicy
from jobrunner._process import hard_exit
from jobrunner._runner import JobWorker
from jobrunner._validation import as_count, as_queues, as_seconds, as_uuid
from jobrunner.backends.postgres._flow import FlowGate
from jobrunner.registry import DEFAULT_QUEUE, HandlerSpec

if TYPE_CHECKING:
    from jobrunner.backends.postgres._runner import PostgresJobRunner

logger = logging.getLogger("jobrunner.worker")

_PROBE_PREFIX = "probe:"
_SYNC_THREAD_PREFIX = "jobrunner-sync"
#: Seconds a stopping worker keeps trying to write its last outcomes and re-queue leftovers.
_FINAL_WRITES_TIMEOUT = 10.0


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker claims, runs and reports jobs."""

    concurrency: int = 20
    """Handlers running at once in this process."""
    queues: tuple[str, ...] = ()
    """Queues to claim from; empty means every queue of the registered handlers."""
    lease_seconds: float = 25.0
    """A job whose worker stops heartbeating is re-queued this long after the last beat (plus
    at most one ``rescue_interval``: with the defaults within 25 + 25/6 < 30 s)."""
    heartbeat_interval: float | None = None
    """Seconds between heartbeats (default: a third of ``lease_seconds``)."""
    rescue_interval: float | None = None
    """Seconds between scans for expired leases (default: a sixth of ``lease_seconds``)."""
    poll_interval: float = 5.0
    """Safety-net poll when no notification arrives."""
    claim_batch: int | None = None
    """Most jobs claimed per statement (default: ``concurrency``)."""
    flush_interval: float = 0.002
    """Outcomes are written at most this many seconds after the first one is buffered."""
    flush_max: int = 1000
    """Outcomes written per statement at most."""
    shutdown_grace: float = 30.0
    """Seconds running jobs get to finish after a stop request before they are re-queued."""
    listen_probe_interval: float = 15.0
    """Seconds of silence after which the LISTEN connection is probed with a self-NOTIFY."""
    sync_threads: int | None = None
    """Threads for plain ``def`` handlers (default: ``concurrency``)."""
    worker_id: uuid.UUID = field(default_factory=uuid.uuid4)
    """Identity written to ``jobs.worker_id`` of claimed jobs."""
    rand: Callable[[], float] = random.random
    """Source of jitter for retry delays; inject for deterministic tests."""
    run_scheduler: bool = True
    """Also fire due ticks of recurring schedules (safe in every worker: one job per tick)."""
    fair: bool = False
    """Always claim round-robin between tenants; otherwise only while flow control is on
    (rules or ``runner.flow.set_fair_claiming(True)``; see docs/fairness.md)."""

    @classmethod
    def build(
        cls,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> WorkerSettings:
        """Validate and build settings; unknown options are a clear error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(options) - known
        if unknown:
            raise InvalidArgumentError(f"unknown worker options: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(options)
        if concurrency is not None:
            values["concurrency"] = concurrency
        if queues is not None:
            values["queues"] = queues
        _check_settings(values)
        settings = cls(**values)
        if not isinstance(settings.concurrency, int) or settings.concurrency < 1:
            raise InvalidArgumentError("concurrency must be a positive integer")
        if settings.lease_seconds <= 0 or settings.poll_interval <= 0:
            raise InvalidArgumentError("lease_seconds and poll_interval must be positive")
        return settings

    @property
    def heartbeat_every(self) -> float:
        """Effective heartbeat interval."""
        return self.heartbeat_interval or self.lease_seconds / 3

    @property
    def rescue_every(self) -> float:
        """Effective rescue interval."""
        return self.rescue_interval or max(self.lease_seconds / 6, 0.05)

    @property
    def requeue_bound(self) -> float:
        """Seconds after a dead worker's last heartbeat by which its jobs are re-queued at the
        latest (while any worker runs): the lease plus one rescue interval."""
        return self.lease_seconds + self.rescue_every


_SECONDS = ("lease_seconds", "poll_interval", "listen_probe_interval")
_SECONDS_OR_ZERO = ("flush_interval", "shutdown_grace")
_OPTIONAL_SECONDS = ("heartbeat_interval", "rescue_interval")
_COUNTS = ("concurrency", "flush_max")
_OPTIONAL_COUNTS = ("claim_batch", "sync_threads")
_FLAGS = ("run_scheduler", "fair")


def _check_settings(values: dict[str, Any]) -> None:
    """Validate worker options in place (seconds may be timedeltas); raise a typed error.

    The bounds are the documented ones of :mod:`jobrunner._validation`: ``lease_seconds`` at
    most ``MAX_LEASE_SECONDS``, the other intervals at most ``MAX_WORKER_INTERVAL_SECONDS``,
    the counts at most ``MAX_WORKER_COUNT``.
    """
    for name in _SECONDS + _SECONDS_OR_ZERO + _OPTIONAL_SECONDS:
        if name in values and not (name in _OPTIONAL_SECONDS and values[name] is None):
            values[name] = as_seconds(
                values[name],
                name,
                allow_zero=name in _SECONDS_OR_ZERO,
                maximum=MAX_LEASE_SECONDS
                if name == "lease_seconds"
                else MAX_WORKER_INTERVAL_SECONDS,
            )
    for name in _COUNTS + _OPTIONAL_COUNTS:
        value = values.get(name)
        if name not in values or (value is None and name in _OPTIONAL_COUNTS):
            continue
        values[name] = as_count(value, name, maximum=MAX_WORKER_COUNT)
    values["queues"] = as_queues(values.get("queues", ()))
    if "worker_id" in values:
        values["worker_id"] = as_uuid(values["worker_id"], "worker_id")
    if "rand" in values and not callable(values["rand"]):
        raise InvalidArgumentError("rand must be a callable returning floats in [0, 1)")
    for name in _FLAGS:
        if name in values and not isinstance(values[name], bool):
            raise InvalidArgumentError(f"{name} must be True or False")
    lease = values.get("lease_seconds", WorkerSettings.lease_seconds)
    beat = values.get("heartbeat_interval")
    if beat is not None and beat >= lease:
        # Leases would lapse between beats and running jobs be rescued under the worker.
        raise InvalidArgumentError("heartbeat_interval must be shorter than lease_seconds")


@dataclass(eq=False)
class _Running:
    attempt: Attempt
    claimed_at: float
    task: asyncio.Task[None] | None = None

    @property
    def tenant(self) -> uuid.UUID:
        return self.attempt.ctx.tenant

    @property
    def job_id(self) -> uuid.UUID:
        return self.attempt.ctx.job_id

    @property
    def token(self) -> int:
        return self.attempt.ctx.lease_token

    @property
    def key(self) -> tuple[uuid.UUID, int]:
        return self.attempt.key


@dataclass
class _Outcomes:
    done: list[tuple[uuid.UUID, uuid.UUID, int, str | None, Any, float]] = field(
        default_factory=list
    )
    failed: list[tuple[uuid.UUID, uuid.UUID, int, str, float | None, Any, float]] = field(
        default_factory=list
    )

    def __len__(self) -> int:
        return len(self.done) + len(self.failed)


class PostgresWorker(JobWorker):
    """Runs jobs for a :class:`PostgresJobRunner`.

    Embed it: ``worker = runner.create_worker(concurrency=10)`` then ``await worker.run()`` in a
    task, and ``await worker.stop()`` to shut down gracefully.
    """

    def __init__(self, runner: PostgresJobRunner, settings: WorkerSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.worker_id = settings.worker_id
        self._started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._flush_now = asyncio.Event()
        # One outcome writer at a time: the final flush at shutdown waits for a write in flight.
        self._flush_lock = asyncio.Lock()
        # Keyed by (job id, lease token): a retry of a job claimed while its cancelled attempt
        # still cleans up is a different entry, and neither's exit can touch the other.
        self._running: dict[tuple[uuid.UUID, int], _Running] = {}
        self._outcomes = _Outcomes()
        # Attempts stopped by shutdown, handed back (not counted) once the worker stops.
        self._to_release: list[_Running] = []
        self._grace: float | None = None
        self._force = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._probe_seen = asyncio.Event()
        self._listen_conn: psycopg.AsyncConnection[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._next_timer: float | None = None
        self.claimed_total = 0
        # Rows the database says we hold but we do not run, as of the last heartbeat.
        self._unknown_held: set[tuple[uuid.UUID, int]] = set()
        self._flow = FlowGate(runner.db, force=settings.fair)
        self._hot: dict[str, psycopg.AsyncConnection[Any]] = {}

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
        found = {spec.queue for spec in self.runner.registry} | {DEFAULT_QUEUE}
        return tuple(sorted(found))

    @property
    def running_jobs(self) -> int:
        """Handlers running right now."""
        return len(self._running)

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
        await self.runner.start()
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
            from jobrunner.backends.postgres._scheduler import Scheduler

            self._tasks.append(
                asyncio.create_task(Scheduler(self.runner.db).run(), name="jobrunner-scheduler")
            )
        try:
            await self._open_hot_connections()
            await self._claim_loop()
        finally:
            await self._shutdown()

    # -- claiming -------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        backoff = 0.1
        # Claim once straight away even before LISTEN is up: jobs may be waiting already.
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            limit = min(free, self.settings.claim_batch or self.settings.concurrency)
            self._wake.clear()
            try:
                claimed = await self._claim(limit)
                backoff = 0.1
            except (JobRunnerError, psycopg.Error, OSError) as exc:
                logger.warning("claim failed (%s); retrying in %.1f s", exc, backoff)
                await self._sleep_or_wake(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if claimed >= limit:
                await asyncio.sleep(0)
                continue
            if claimed and self._flow.active:
                continue  # a fair claim may stop short of what is claimable
            # Fewer than asked: nothing else was due. No second claim to make sure; a job
            # enqueued since the claim began has set _wake (cleared before the claim).
            await self._sleep_or_wake(await self._idle_delay())

    async def _idle_delay(self) -> float:
        delay = self.settings.poll_interval
        try:
            # On the claim connection: it is free between claims, and a pooled checkout
            # would cost its liveness round trip after every claim.
            async with self._hot_connection("claim") as conn:
                cur = await conn.execute(
                    self.runner.db.queries.next_due_in, {"queues": list(self.queues)}
                )
                row = await cur.fetchone()
        except (JobRunnerError, psycopg.Error, OSError):
            return min(delay, 1.0)
        if row and row["seconds"] is not None:
            delay = min(delay, max(float(row["seconds"]), 0.0))
        return self._flow.idle_delay(delay)

    async def _sleep_or_wake(self, delay: float) -> None:
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _claim(self, limit: int) -> int:
        params = {
            "queues": list(self.queues),
            "limit": limit,
            "worker_id": self.worker_id,
            "lease_seconds": float(self.settings.lease_seconds),
        }
        async with self._hot_connection("claim") as conn:
            # Flow control (limits, pauses, fair claiming) on: the fair claim; else the plain one.
            rows = await self._flow.claim(conn, params)
            if rows is None:
                cur = await conn.execute(self.runner.db.queries.claim_jobs, params)
                rows = await cur.fetchall()
                if not rows:  # claim_jobs yields nothing once flow control is switched on
                    rows = await self._flow.claim_after_empty(conn, params)
        now = time.monotonic()
        for row in rows:
            self._start_job(row, now)
        self.claimed_total += len(rows)
        return len(rows)

    @contextlib.asynccontextmanager
    async def _hot_connection(self, slot: str) -> AsyncIterator[Any]:
        """A connection this worker keeps for one hot loop (``claim`` or ``flush``).

        Performance (docs/performance.md): every pooled checkout costs a liveness-check round
        trip, and these loops run statement after statement. On any error the connection is
        dropped; the loops retry and so reconnect.
        """
        found = self._hot.get(slot)
        if found is None or found.closed:
            found = await self.runner.db.dedicated_connection()
            self._hot[slot] = found
        conn: psycopg.AsyncConnection[Any] = found
        try:
            with translate_errors():
                yield conn
        except BaseException:
            if self._hot.get(slot) is conn:
                del self._hot[slot]
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    async def _open_hot_connections(self) -> None:
        # Connect up front so the first claim and the first outcome write pay no connect.
        for slot in ("claim", "flush"):
            with contextlib.suppress(JobRunnerError, psycopg.Error, OSError):
                async with self._hot_connection(slot):
                    pass

    async def _close_hot_connections(self) -> None:
        conns, self._hot = list(self._hot.values()), {}
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()

    def _start_job(self, row: dict[str, Any], now: float) -> None:
        spec = self.runner.registry.find(row["type"])
        fallback = spec.policy if spec is not None else JobPolicy()
        stored = row.get("policy")
        policy = JobPolicy.from_json(stored, fallback=fallback)
        ctx = JobContext(
            job_id=row["job_id"],
            name=row["type"],
            tenant=row["tenant"],
            attempt=row["attempts"],
            max_attempts=policy.retry.max_attempts,
            queue=row["queue"],
            metadata=dict(row["metadata"] or {}),
            schedule_id=row["schedule_id"],
            lease_token=row["lease_token"],
            _sink=self.runner.store,
        )
        running = _Running(Attempt(ctx, row["data"] or {}, policy), now)
        self._running[running.key] = running
        running.task = asyncio.create_task(
            self._execute(running, spec, pin=stored is None), name=f"jobrunner-attempt-{ctx.job_id}"
        )

    # -- execution ------------------------------------------------------------------------
    async def _execute(self, job: _Running, spec: HandlerSpec | None, *, pin: bool) -> None:
        attempt = job.attempt
        try:
            if pin:
                await self._pin_policy(attempt)
            outcome = await run_attempt(
                attempt, spec, executor=self._executor, rand=self.settings.rand
            )
            self._record(job, outcome)
        finally:
            if self._running.get(job.key) is job:
                del self._running[job.key]
            self._slot_free.set()

    async def _pin_policy(self, attempt: Attempt) -> None:
        """Store the policy this attempt runs under with a job enqueued without one."""
        policy = attempt.policy
        try:
            async with self.runner.db.connection() as conn:
                await conn.execute(
                    self.runner.db.queries.pin_policy,
                    {
                        "tenant": attempt.ctx.tenant,
                        "job_id": attempt.ctx.job_id,
                        "token": attempt.ctx.lease_token,
                        "policy": Jsonb(policy.to_json()),
                        "max_attempts": policy.retry.max_attempts,
                    },
                )
        except (JobRunnerError, psycopg.Error, OSError) as exc:
            # The attempt runs under the same policy either way; the next claim pins it.
            logger.warning("could not store job %s's policy: %s", attempt.ctx.job_id, exc)

    def _record(self, job: _Running, outcome: Outcome) -> None:
        attempt = job.attempt
        if isinstance(outcome, Completed):
            self._outcomes.done.append(
                (
                    job.tenant,
                    job.job_id,
                    job.token,
                    outcome.result_json,
                    attempt.started_wall,
                    attempt.duration_ms,
                )
            )
            self._schedule_flush()
        elif isinstance(outcome, Failed):
            self._record_failure(
                job,
                outcome.error.to_json(),
                outcome.retry_in,
                attempt.started_wall,
                attempt.started,
            )
        elif outcome.reason is AbortReason.SHUTDOWN:
            self._to_release.append(job)
        # CANCELLED: the cancel recorded the outcome; LEASE_LOST: the job's new holder does.

    def _record_failure(
        self,
        job: _Running,
        error: dict[str, Any],
        retry_in: float | None,
        started_wall: float,
        started: float,
    ) -> None:
        self._outcomes.failed.append(
            (
                job.tenant,
                job.job_id,
                job.token,
                json.dumps(error),
                retry_in,
                started_wall,
                (time.monotonic() - started) * 1000,
            )
        )
        self._schedule_flush()
        if retry_in is not None and retry_in < self.settings.poll_interval:
            self._arm_timer(retry_in)

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
        batch, self._outcomes = self._outcomes, _Outcomes()
        if not batch:
            return
        backoff = 0.05
        while True:
            try:
                await self._write_outcomes(batch)
                if self._flow.active:  # freed capacity: a limit-blocked claim may succeed now
                    self._wake.set()
                return
            except DatabaseError as exc:
                # A value PostgreSQL rejects fails every retry of the whole batch: isolate it
                # rather than block every other outcome forever.
                await self._write_isolated(batch, exc)
                return
            except (JobRunnerError, psycopg.Error, OSError) as exc:
                if self._stopped.is_set():
                    logger.error("dropping %d outcomes at exit: %s", len(batch), exc)
                    return
                logger.warning("writing outcomes failed (%s); retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _write_isolated(self, batch: _Outcomes, exc: Exception) -> None:
        """Write ``batch`` one outcome at a time after it failed with a data error.

        A completion that cannot be stored is recorded as a non-retryable failure instead; an
        outcome that still cannot be written is dropped (its lease expires, the job runs again).
        """
        logger.warning("writing %d outcomes failed (%s); writing them one by one", len(batch), exc)
        singles = [_Outcomes(done=[d]) for d in batch.done]
        singles += [_Outcomes(failed=[f]) for f in batch.failed]
        for one in singles:
            job_id = (one.done or one.failed)[0][1]
            try:
                await self._write_outcomes(one)
                continue
            except (JobRunnerError, psycopg.Error, OSError) as err:
                problem: Exception = err
            if isinstance(problem, DatabaseError):
                # Store what can be stored: a failure with the database's complaint, no result.
                if one.done:
                    tenant, _, token, _text, started_wall, duration = one.done[0]
                    retry_in: float | None = None
                    cause: BaseException = NonRetryable(
                        f"the result could not be stored: {problem}"
                    )
                else:
                    tenant, _, token, _err, retry_in, started_wall, duration = one.failed[0]
                    cause = JobRunnerError(f"the error could not be stored: {problem}")
                error = json.dumps(describe_error(cause).to_json())
                fallback = _Outcomes(
                    failed=[(tenant, job_id, token, error, retry_in, started_wall, duration)]
                )
                try:
                    await self._write_outcomes(fallback)
                    continue
                except (JobRunnerError, psycopg.Error, OSError) as err:
                    problem = err
            logger.error(
                "dropping the outcome of job %s (its lease will expire): %s", job_id, problem
            )

    async def _write_outcomes(self, batch: _Outcomes) -> None:
        q = self.runner.db.queries
        async with self._hot_connection("flush") as conn:
            for start in range(0, len(batch.done), self.settings.flush_max):
                part = batch.done[start : start + self.settings.flush_max]
                await conn.execute(
                    q.complete_jobs,
                    {
                        "tenants": [d[0] for d in part],
                        "job_ids": [d[1] for d in part],
                        "tokens": [d[2] for d in part],
                        "results": [d[3] for d in part],
                        "started": [_ts(d[4]) for d in part],
                        "durations": [d[5] for d in part],
                        "worker_id": str(self.worker_id),
                    },
                )
            for start in range(0, len(batch.failed), self.settings.flush_max):
                fpart = batch.failed[start : start + self.settings.flush_max]
                await conn.execute(
                    q.fail_jobs,
                    {
                        "tenants": [f[0] for f in fpart],
                        "job_ids": [f[1] for f in fpart],
                        "tokens": [f[2] for f in fpart],
                        "errors": [f[3] for f in fpart],
                        "retry_in": [f[4] for f in fpart],
                        "started": [_ts(f[5]) for f in fpart],
                        "durations": [f[6] for f in fpart],
                        "worker_id": str(self.worker_id),
                    },
                )
            if any(f[4] is not None for f in batch.failed):
                await conn.execute(
                    q.notify_jobs,
                    {"channel": self.runner.db.channel_jobs, "payload": "retry"},
                )

    # -- heartbeats and rescue ------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        q = self.runner.db.queries
        while True:
            await asyncio.sleep(self.settings.heartbeat_every)
            sent_at = time.monotonic()
            try:
                async with self.runner.db.connection() as conn:
                    cur = await conn.execute(
                        q.heartbeat,
                        {
                            "worker_id": self.worker_id,
                            "lease_seconds": float(self.settings.lease_seconds),
                        },
                    )
                    beat = await cur.fetchall()
                    held = {(r["job_id"], r["lease_token"]) for r in beat}
            except (JobRunnerError, psycopg.Error, OSError) as exc:
                logger.warning("heartbeat failed: %s", exc)
                continue
            pending = {(d[1], d[2]) for d in self._outcomes.done} | {
                (f[1], f[2]) for f in self._outcomes.failed
            }
            await self._release_orphans(beat, pending)
            for job in list(self._running.values()):
                key = (job.job_id, job.token)
                if job.claimed_at < sent_at and key not in held and key not in pending:
                    logger.warning("job %s lost its lease; stopping its handler", job.job_id)
                    self._abort(job, AbortReason.LEASE_LOST)

    async def _release_orphans(
        self, beat: list[dict[str, Any]], pending: set[tuple[uuid.UUID, int]]
    ) -> None:
        """Hand back rows we hold in the database but do not run.

        A claim whose reply was lost (the connection died after the commit) leaves rows with
        our worker id that no handler runs; the heartbeat would renew their leases for as long
        as this process lives. A row unknown in two heartbeats in a row is released (fenced by
        its token, attempt not counted). Skipped while outcomes are being written: a row in
        that batch is known, just not listed in ``pending`` any more.
        """
        known = {(j.job_id, j.token) for j in self._running.values()} | pending
        unknown = {(r["job_id"], r["lease_token"]) for r in beat} - known
        if self._flush_lock.locked():
            self._unknown_held &= unknown
            return
        orphans, self._unknown_held = unknown & self._unknown_held, unknown
        if not orphans:
            return
        rows = [r for r in beat if (r["job_id"], r["lease_token"]) in orphans]
        logger.warning(
            "releasing %d jobs claimed by this worker but not running here (a "
            "claim's reply was lost)",
            len(rows),
        )
        try:
            async with self.runner.db.connection() as conn:
                await conn.execute(
                    self.runner.db.queries.release_jobs,
                    {
                        "tenants": [r["tenant"] for r in rows],
                        "job_ids": [r["job_id"] for r in rows],
                        "tokens": [r["lease_token"] for r in rows],
                        "channel": self.runner.db.channel_jobs,
                    },
                )
            self._unknown_held -= orphans
        except (JobRunnerError, psycopg.Error, OSError) as exc:
            logger.warning("releasing orphaned claims failed: %s", exc)

    async def _rescue_loop(self) -> None:
        q = self.runner.db.queries
        while True:
            await asyncio.sleep(self.settings.rescue_every)
            try:
                async with self.runner.db.connection() as conn:
                    cur = await conn.execute(q.rescue_expired)
                    rows = await cur.fetchall()
                    if rows:
                        logger.warning("re-queued %d jobs whose lease expired", len(rows))
                        await conn.execute(
                            q.notify_jobs,
                            {"channel": self.runner.db.channel_jobs, "payload": "rescued"},
                        )
            except (JobRunnerError, psycopg.Error, OSError) as exc:
                logger.debug("rescue scan failed: %s", exc)

    def _abort(self, job: _Running, reason: AbortReason) -> None:
        job.attempt.abort(reason)

    # -- notifications --------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen_once()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on any listener failure
                logger.warning("listener lost (%s); reconnecting in %.1f s", exc, backoff)
            finally:
                conn, self._listen_conn = self._listen_conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            self._wake.set()  # we may have missed notifications: look for work now
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _listen_once(self) -> None:
        db = self.runner.db
        conn = await db.dedicated_connection()
        self._listen_conn = conn
        for channel in (db.channel_jobs, db.channel_cancel):
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self._started.set()
        self._wake.set()
        probe_token = f"{_PROBE_PREFIX}{self.worker_id}"
        probe_sent: float | None = None
        while True:
            received = False
            gen = conn.notifies(timeout=1.0)
            try:
                async for note in gen:
                    received = True
                    if note.channel == db.channel_cancel:
                        self._on_cancel(note.payload)
                    elif note.payload == probe_token:
                        probe_sent = None
                    elif not note.payload.startswith(_PROBE_PREFIX):
                        self._wake.set()
            finally:
                await gen.aclose()
            now = time.monotonic()
            if probe_sent is not None and now - probe_sent > 5.0:
                raise JobRunnerError("LISTEN connection did not deliver our probe in 5 s")
            if not received and probe_sent is None:
                last = getattr(self, "_last_probe", 0.0)
                if now - last >= self.settings.listen_probe_interval:
                    self._last_probe = now
                    probe_sent = now
                    async with db.connection() as pconn:
                        await pconn.execute(
                            db.queries.notify_jobs,
                            {"channel": db.channel_jobs, "payload": probe_token},
                        )

    def _on_cancel(self, payload: str) -> None:
        """Stop the attempts of a cancelled job that are older than the cancel.

        The payload is ``job_id:token`` (the token the cancel set); an attempt of the same job
        claimed after the cancel (a retry) has a newer token and keeps running.
        """
        job_part, _, token_part = payload.partition(":")
        try:
            job_id = uuid.UUID(job_part)
            fence = int(token_part) if token_part else None
        except ValueError:
            return
        for job in list(self._running.values()):
            if job.job_id == job_id and (fence is None or job.token < fence):
                logger.info("job %s cancelled; stopping its handler", job_id)
                self._abort(job, AbortReason.CANCELLED)

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
        try:
            # Bounded: with the database away, a write in flight retries until ``_stopped``.
            async with asyncio.timeout(_FINAL_WRITES_TIMEOUT):
                await self._flush()
                if leftovers:
                    await self._release(leftovers)
        except TimeoutError:
            logger.error(
                "could not write the last outcomes within %.0f s (database unavailable); "
                "their jobs run again when their leases expire",
                _FINAL_WRITES_TIMEOUT,
            )
        self._stopped.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_hot_connections()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        logger.info("worker %s stopped", self.worker_id)

    async def _release(self, jobs: list[_Running]) -> None:
        try:
            async with self.runner.db.connection() as conn:
                await conn.execute(
                    self.runner.db.queries.release_jobs,
                    {
                        "tenants": [j.tenant for j in jobs],
                        "job_ids": [j.job_id for j in jobs],
                        "tokens": [j.token for j in jobs],
                        "channel": self.runner.db.channel_jobs,
                    },
                )
            logger.info("re-queued %d unfinished jobs", len(jobs))
        except (JobRunnerError, psycopg.Error, OSError) as exc:
            logger.error(
                "could not re-queue %d jobs (their leases will expire): %s", len(jobs), exc
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
        handlers = ", ".join(self.runner.registry.names()) or "(none)"
        logger.info(
            "jobrunner worker %s starting: backend=postgres database=%s schema=%s queues=%s "
            "concurrency=%d lease=%.0fs handlers=[%s]",
            self.worker_id,
            _redact(self.runner.db.conninfo),
            self.runner.db.schema,
            ",".join(self.queues),
            self.settings.concurrency,
            self.settings.lease_seconds,
            handlers,
        )


def _ts(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def _redact(conninfo: str) -> str:
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparsable)"
    host = params.get("host", "local socket")
    return f"{params.get('dbname', '?')}@{host}:{params.get('port', 5432)}"
