"""PostgresStore: the queue store of the PostgreSQL backend; every statement the worker, the
schedule ticker and the schedule definitions run goes through it (named SQL from
``_sql/queries``: ``worker.sql``, ``fairness.sql``, ``schedules.sql``).

Performance (docs/performance.md): the claim and the outcome writes run statement after
statement, and every pooled checkout costs a liveness round trip, so a store keeps one
dedicated connection for each of those two loops. A store therefore serves one worker; the
runner makes one per worker (``PostgresJobRunner.queue_store()``) and keeps one for its own
schedule calls.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg
from psycopg.types.json import Jsonb

from jobrunner._db._errors import retry_conflicts, translate_errors
from jobrunner._db._store import JobStore
from jobrunner._errors import JobRunnerError, NotSupportedError
from jobrunner._jobargs import RecurringArgs
from jobrunner._models import ScheduledJob, ScheduleInfo
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
    Notice,
    OutcomeBatch,
    Topic,
)
from jobrunner.backends.postgres import _schedule_definitions as definitions
from jobrunner.backends.postgres._flow_gate import FlowGate
from jobrunner.backends.postgres._listener import Listener
from jobrunner.backends.postgres._schedule_ticks import fire_due, seconds_until_next

if TYPE_CHECKING:
    from jobrunner._context import DurableStart, JobContext
    from jobrunner._db._database import AsyncConn, Database

__all__ = ["PostgresStore"]

_HOT_SLOTS = ("claim", "flush")

#: Session settings of the claim connection. PostgreSQL's choice for a prepared claim_jobs is a
#: custom plan on every run (its generic plan is estimated dearer), and planning the CTE cost
#: about 0.7 ms of each ~1.3 ms claim, in the path of every job an idle worker starts. The
#: generic plan reads the claim index the same way (tests/test_explain.py checks both plans)
#: and is rebuilt whenever jobs_live is analysed. The limited claim keeps PostgreSQL's choice
#: (``flow_claim_lock`` resets this for its transaction).
#: No sequential scans: a plan made while jobs_live looked nearly empty (a new worker's first
#: claim on a quiet queue, kept until the next ANALYZE) found the claimed rows by scanning
#: the table instead of by ctid, 90-150 ms a claim once a 100k backlog had arrived. Nothing the
#: claim connection runs should read a whole table.
_CLAIM_SESSION_SETUP = ("SET plan_cache_mode = force_generic_plan", "SET enable_seqscan = off")


# Outcome batches travel as array literals written here and typed by the statement's casts
# (psycopg sends a str as "unknown"): the same arrays psycopg would send for lists, without its
# per-element dumping, which took a tenth of the worker's CPU in a drain.
def _uuid_array(values: Iterable[uuid.UUID]) -> str:
    # The 32 hex digits without hyphens (PostgreSQL reads both forms): a third of str()'s cost.
    return "{" + ",".join([v.hex for v in values]) + "}"


def _number_array(values: Iterable[float | int | None]) -> str:
    return "{" + ",".join(["NULL" if v is None else repr(v) for v in values]) + "}"


def _text_array(values: Iterable[str | None]) -> str:
    return "{" + ",".join([_quoted(v) for v in values]) + "}"


def _quoted(value: str | None) -> str:
    """An array element: NULL, or the text in double quotes with ``\\`` and ``"`` escaped."""
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attempt_params(
    attempts: Sequence[CompletedAttempt] | Sequence[FailedAttempt], worker_id: str
) -> dict[str, Any]:
    """The parameters ``complete_jobs`` and ``fail_jobs`` share: which attempts, and when."""
    return {
        "tenants": _uuid_array([a.ref.tenant for a in attempts]),
        "job_ids": _uuid_array([a.ref.job_id for a in attempts]),
        "tokens": _number_array([a.ref.lease_token for a in attempts]),
        "started": _number_array([a.started_at for a in attempts]),
        "durations": _number_array([a.duration_ms for a in attempts]),
        "worker_id": worker_id,
    }


def completed_params(done: Sequence[CompletedAttempt], worker_id: str) -> dict[str, Any]:
    """``complete_jobs``'s parameters for ``done``."""
    params = _attempt_params(done, worker_id)
    params["results"] = _text_array([d.result_json for d in done])
    return params


def failed_params(failed: Sequence[FailedAttempt], worker_id: str) -> dict[str, Any]:
    """``fail_jobs``'s parameters for ``failed``."""
    params = _attempt_params(failed, worker_id)
    params["errors"] = _text_array([f.error_json for f in failed])
    params["retry_in"] = _number_array(
        [None if f.retry_in is None else float(f.retry_in) for f in failed]
    )
    return params


_POLICIES: dict[str, dict[str, Any]] = {}
"""Stored policies (their JSON text) parsed by this worker: jobs share a handful."""


def _stored_policy(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    found = _POLICIES.get(text)
    if found is None:
        found = json.loads(text)
        if not isinstance(found, dict):
            return {}  # written by hand: unreadable, so the handler's policy applies (from_json)
        if len(_POLICIES) >= 1024:
            _POLICIES.clear()
        _POLICIES[text] = found
    return found


def _claimed(row: dict[str, Any]) -> ClaimedJob:
    return ClaimedJob(
        tenant=row["tenant"],
        job_id=row["job_id"],
        name=row["type"],
        data=row["data"] or {},
        attempt=row["attempts"],
        lease_token=row["lease_token"],
        queue=row["queue"],
        metadata=row["metadata"] or {},
        schedule_id=row["schedule_id"],
        policy=_stored_policy(row["policy"]),
        run_at=row.get("run_at"),
    )


def _redact(conninfo: str) -> str:
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparsable)"
    host = params.get("host", "local socket")
    return f"{params.get('dbname', '?')}@{host}:{params.get('port', 5432)}"


class PostgresStore:
    """The PostgreSQL implementation of :class:`~jobrunner._queue._store.QueueStore`.

    Args:
        db: The runner's database (pool, schema, named queries).
        tables: The runner's shared table operations; progress and step writes of handlers
            go through it (default: a new one on ``db``).
        ensure_started: Awaited by :meth:`open` (the runner's start: migrations, pool).
        scheduler: The runner's ``schedule_child`` (``ctx.schedule_job`` of handlers).
    """

    backend = "postgres"

    def __init__(
        self,
        db: Database,
        *,
        tables: JobStore | None = None,
        ensure_started: Callable[[], Awaitable[None]] | None = None,
        scheduler: Callable[..., Awaitable[ScheduledJob]] | None = None,
    ) -> None:
        self.db = db
        self._q = db.queries
        self._tables = tables if tables is not None else JobStore(db)
        self._ensure_started = ensure_started
        self._scheduler = scheduler
        self._hot: dict[str, AsyncConn] = {}
        self._gate = FlowGate(db)
        self._listener = Listener(db)

    # -- lifecycle ------------------------------------------------------------------------
    def describe(self) -> str:
        """``database=<name>@<host>:<port> schema=<schema>`` (no credentials)."""
        return f"database={_redact(self.db.conninfo)} schema={self.db.schema}"

    async def open(self) -> None:
        """Start the runner, then connect the hot loops' connections (the first claim and the
        first outcome write then pay no connect; a failure here is retried by the loops)."""
        if self._ensure_started is not None:
            await self._ensure_started()
        for slot in _HOT_SLOTS:
            with contextlib.suppress(JobRunnerError, psycopg.Error, OSError):
                async with self._hot_connection(slot):
                    pass

    async def close(self) -> None:
        """Close the hot loops' connections (the pool is the runner's)."""
        await self._gate.close()
        conns, self._hot = list(self._hot.values()), {}
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()

    @contextlib.asynccontextmanager
    async def _hot_connection(self, slot: str) -> AsyncIterator[AsyncConn]:
        """The connection this store keeps for one hot loop (``claim`` or ``flush``).

        On any error the connection is dropped; the loops retry and so reconnect.
        """
        found = self._hot.get(slot)
        if found is None or found.closed:
            setup = _CLAIM_SESSION_SETUP if slot == "claim" else ()
            found = await self.db.dedicated_connection(*setup)
            # A hot loop runs the same few statements all its life: prepared at their first
            # run, not psycopg's fifth, so a new worker's first claims skip planning too.
            found.prepare_threshold = 0
            self._hot[slot] = found
        conn = found
        try:
            with translate_errors():
                yield conn
        except BaseException:
            if self._hot.get(slot) is conn:
                del self._hot[slot]
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    # -- claiming -------------------------------------------------------------------------
    async def claim(self, request: ClaimRequest) -> Claim:
        """Claim due jobs; flow control on: the fair claim under its lock, else the plain one."""
        params = {
            "queues": list(request.queues),
            "limit": request.limit,
            "worker_id": request.worker_id,
            "lease_seconds": float(request.lease_seconds),
        }

        async def claim_on(conn: AsyncConn) -> list[dict[str, Any]]:
            rows = await self._gate.claim(conn, params, force=request.fair)
            if rows is None:
                cur = await conn.execute(self._q.claim_jobs, params)
                rows = await cur.fetchall()
                if not rows:  # claim_jobs yields nothing once flow control is switched on
                    rows = await self._gate.claim_after_empty(conn, params)
            return rows

        async with self._hot_connection("claim") as conn:
            # A job claimed and finished by another worker while this statement ran (its
            # snapshot still saw it queued) has moved to jobs_finished: locking it fails the
            # statement (0009), and a new one does not see it.
            rows = await retry_conflicts(lambda: claim_on(conn))
        return Claim([_claimed(row) for row in rows], gated=self._gate.active)

    async def idle_delay(self, queues: Sequence[str], *, longest: float) -> float:
        """Seconds until the next job of ``queues`` falls due (at most ``longest``)."""
        delay = longest
        # On the claim connection: it is free between claims, and a pooled checkout would
        # cost its liveness round trip after every claim.
        async with self._hot_connection("claim") as conn:
            asked_at = time.monotonic()
            cur = await conn.execute(self._q.next_due_in, {"queues": list(queues)})
            row = await cur.fetchone()
        due_in = None
        if row and row["seconds"] is not None:
            due_in = float(row["seconds"])
            delay = min(delay, max(due_in, 0.0))
        return self._gate.idle_delay(delay, due_in=due_in, asked_at=asked_at)

    async def pin_policy(self, ref: AttemptRef, policy: JobPolicy) -> None:
        """Store ``policy`` with a job enqueued without one (fenced by the attempt)."""
        async with self.db.connection() as conn:
            await conn.execute(
                self._q.pin_policy,
                {
                    "tenant": ref.tenant,
                    "job_id": ref.job_id,
                    "token": ref.lease_token,
                    "policy": Jsonb(policy.to_json()),
                    "max_attempts": policy.retry.max_attempts,
                },
            )

    # -- outcomes -------------------------------------------------------------------------
    async def record_outcomes(
        self, batch: OutcomeBatch, *, worker_id: uuid.UUID, per_statement: int
    ) -> None:
        """``complete_jobs`` and ``fail_jobs`` in slices of ``per_statement``."""
        q = self._q
        worker = str(worker_id)
        async with self._hot_connection("flush") as conn:
            for start in range(0, len(batch.completed), per_statement):
                done = batch.completed[start : start + per_statement]
                await _execute_retrying(
                    conn,
                    q.complete_jobs,
                    completed_params(done, worker),
                )
            for start in range(0, len(batch.failed), per_statement):
                failed = batch.failed[start : start + per_statement]
                await _execute_retrying(
                    conn,
                    q.fail_jobs,
                    failed_params(failed, worker),
                )
            if any(f.retry_in is not None for f in batch.failed):
                await conn.execute(
                    q.notify_jobs, {"channel": self.db.channel_jobs, "payload": "retry"}
                )

    async def release(self, refs: Sequence[AttemptRef]) -> None:
        """``release_jobs``: queued again, attempt not counted, idle workers woken."""
        async with self.db.connection() as conn:
            await _execute_retrying(
                conn,
                self._q.release_jobs,
                {
                    "tenants": [r.tenant for r in refs],
                    "job_ids": [r.job_id for r in refs],
                    "tokens": [r.lease_token for r in refs],
                    "channel": self.db.channel_jobs,
                },
            )

    # -- liveness -------------------------------------------------------------------------
    async def heartbeat(self, worker_id: uuid.UUID, lease_seconds: float) -> list[AttemptRef]:
        """Extend the leases of ``worker_id``'s processing jobs; return what it holds."""
        async with self.db.connection() as conn:
            cur = await _execute_retrying(
                conn,
                self._q.heartbeat,
                {"worker_id": worker_id, "lease_seconds": float(lease_seconds)},
            )
            rows = await cur.fetchall()
        return [AttemptRef(r["tenant"], r["job_id"], r["lease_token"]) for r in rows]

    async def rescue_expired(self) -> int:
        """``rescue_expired`` (at most 1000 jobs per call); NOTIFY when any was rescued."""
        async with self.db.connection() as conn:
            cur = await _execute_retrying(conn, self._q.rescue_expired, None)
            rows = await cur.fetchall()
            if rows:
                await conn.execute(
                    self._q.notify_jobs, {"channel": self.db.channel_jobs, "payload": "rescued"}
                )
        return len(rows)

    # -- notifications --------------------------------------------------------------------
    async def listen(
        self,
        topics: frozenset[Topic],
        deliver: Callable[[Notice], None],
        *,
        ready: Callable[[], None],
        probe_interval: float | None = None,
    ) -> NoReturn:
        """LISTEN on a dedicated connection; see :class:`~._listener.Listener`."""
        await self._listener.listen(topics, deliver, ready=ready, probe_interval=probe_interval)

    # -- progress and steps (JobSink) -----------------------------------------------------
    async def save_progress(self, ctx: JobContext, progress: int, message: str | None) -> None:
        """See :meth:`JobStore.save_progress`."""
        await self._tables.save_progress(ctx, progress, message)

    async def start_step(self, ctx: JobContext, name: str) -> uuid.UUID:
        """See :meth:`JobStore.start_step`."""
        return await self._tables.start_step(ctx, name)

    async def finish_step(
        self, ctx: JobContext, detail_id: uuid.UUID, *, ok: bool, result: Any, error: Any
    ) -> None:
        """See :meth:`JobStore.finish_step`."""
        await self._tables.finish_step(ctx, detail_id, ok=ok, result=result, error=error)

    async def begin_durable_step(self, ctx: JobContext, name: str) -> DurableStart:
        """See :meth:`JobStore.begin_durable_step`."""
        return await self._tables.begin_durable_step(ctx, name)

    async def complete_durable_step(
        self, ctx: JobContext, detail_id: uuid.UUID, result_json: str | None, *, tries: int
    ) -> bool:
        """See :meth:`JobStore.complete_durable_step`."""
        return await self._tables.complete_durable_step(ctx, detail_id, result_json, tries=tries)

    # -- dependencies and children (DependencySink) ------------------------------------------
    async def dependency_results(self, ctx: JobContext) -> dict[uuid.UUID, Any]:
        """See :meth:`JobStore.dependency_results`."""
        return await self._tables.dependency_results(ctx)

    async def schedule_child(
        self,
        ctx: JobContext,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """Enqueue a child job through the runner (``ctx.schedule_job``)."""
        if self._scheduler is None:
            raise NotSupportedError("this worker's store has no runner to enqueue child jobs")
        return await self._scheduler(ctx, name, data, run_at, options)

    # -- recurring schedules: ticks -------------------------------------------------------
    async def fire_due_ticks(
        self, *, now: datetime | None, limit: int, grace: timedelta
    ) -> list[FiredSchedule]:
        """See :func:`~._schedule_ticks.fire_due`."""
        async with self.db.connection() as conn:
            return await fire_due(conn, self.db.schema, now, limit=limit, grace=grace)

    async def seconds_until_next_tick(self, *, now: datetime | None) -> float | None:
        """See :func:`~._schedule_ticks.seconds_until_next`."""
        async with self.db.connection() as conn:
            return await seconds_until_next(conn, self.db.schema, now)

    # -- recurring schedules: definitions -------------------------------------------------
    async def save_schedule(
        self, args: RecurringArgs, *, now: datetime | None = None
    ) -> ScheduledJob:
        """Create or update a schedule; see :func:`~._schedule_definitions.save_schedule`."""
        return await definitions.save_schedule(self.db, args, now=now)

    async def list_schedules(self, tenant: uuid.UUID) -> list[ScheduleInfo]:
        """The tenant's schedules, by name."""
        return await definitions.list_schedules(self.db, tenant)

    async def set_schedule_paused(
        self,
        tenant: uuid.UUID,
        schedule_id: uuid.UUID,
        *,
        paused: bool,
        now: datetime | None = None,
    ) -> bool:
        """Pause or resume; ``False`` when the tenant has no such schedule."""
        return await definitions.set_paused(self.db, tenant, schedule_id, paused=paused, now=now)

    async def remove_schedule(
        self,
        tenant: uuid.UUID,
        schedule_id: uuid.UUID,
        *,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Remove a schedule (its tracker row is cancelled); ``False`` when there is none."""
        return await definitions.cancel_schedule(
            self.db, tenant, schedule_id, reason=reason, cancelled_by=cancelled_by
        )


async def _execute_retrying(conn: AsyncConn, query: Any, params: Any) -> Any:
    """``conn.execute`` in autocommit, run again when the statement lost a race with one that
    moved a job's row between the partitions of jobs (0009): it then sees the moved row (an
    outcome's fence or a rescue's status check leaves it alone), so the writes stay exact."""

    async def run() -> Any:
        return await conn.execute(query, params)

    return await retry_conflicts(run)
