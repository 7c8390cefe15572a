"""The claiming side of flow control: which claim a worker's store runs, and its fair schedule.

The rules themselves are set through :class:`~jobrunner.backends.postgres.FlowControl`
(``_flow.py``); everything lives in the database (migrations 0004 and 0011, ``fairness.sql``):

* Without a concurrency or rate limit (the common case) every worker runs ``claim_jobs``, which
  takes no lock beyond the rows it claims: fair between the tenants of a queue unless switched
  off (``flow_state.fair``, ``WorkerSettings.fair``), honouring pauses and weights. A
  single-tenant queue is claimed as without fairness.
* While a concurrency or rate limit exists (``flow_state.enabled``) claims must count exactly:
  ``claim_jobs_fair`` runs under one transaction-level advisory lock per schema, so two
  claimers never both count the same free slot. ``claim_jobs`` yields no rows then, and when
  the rules changed since the worker last read them, so the gate re-reads the state and claims
  again on the right path: a rule binds every claim that starts after the change commits.
* The stride-scheduling state (each tenant's pass and the virtual clock) is the worker's own,
  passed to each claim and advanced from what it returns: no claim writes shared state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    from jobrunner._db._database import AsyncConn, Database

__all__ = ["FlowGate", "flow_lock_key"]

logger = logging.getLogger(__name__)

#: Seconds a worker on the limited path trusts its cached flow state. Without limits the state
#: is not read again until a claim needs it: ``claim_jobs`` yields on a version it was not
#: given, so a change is seen at once; this only bounds how long a worker keeps the limited
#: path after the last limit is removed.
STATE_TTL = 2.0

#: Seconds between claim attempts while due jobs exist but none was claimable (paused, held
#: back by a limit); doubles with every further empty claim up to BLOCKED_POLL_MAX (a paused
#: tenant's backlog must not keep every worker claiming ten times a second). Changes and own
#: completions wake at once.
BLOCKED_POLL = 0.1
BLOCKED_POLL_MAX = 1.0

#: Seconds between a worker's checks that the live jobs' statistics are fresh.
STATS_CHECK = 1.0


def flow_lock_key(schema: str) -> str:
    """The advisory lock every limited claim and rule change of ``schema`` takes."""
    return f"jobrunner-flow:{schema}"


def _live_table(db: Database) -> str:
    return sql.Identifier(db.schema).as_string(None) + ".jobs_live"


class FlowGate:
    """One worker's view of flow control: the cached state, its fair schedule and the claim.

    Args:
        db: The worker's database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._enabled = False
        self._fair = True
        self._version: int | None = None
        self._checked_at = -math.inf
        self._key = flow_lock_key(db.schema)
        self._limited = False
        self._empty_claims = 0
        self._stats_checked_at = -math.inf
        self._stats_task: asyncio.Task[None] | None = None
        self._passes: dict[uuid.UUID, float] = {}
        self._vclock = 0.0
        # time.monotonic() just before the last claim statement was sent.
        self._claim_sent = -math.inf

    @property
    def active(self) -> bool:
        """Whether the last claim went through the limited path (it may stop short)."""
        return self._limited

    async def _read_state(self, conn: AsyncConn, *, fresh: bool = False) -> None:
        now = time.monotonic()
        expired = self._enabled and now - self._checked_at >= STATE_TTL
        if fresh or self._version is None or expired:
            cur = await conn.execute(self._db.queries.flow_state)
            row = await cur.fetchone()
            self._enabled = bool(row and row["enabled"])
            self._fair = bool(row["fair"]) if row else True
            self._version = int(row["version"]) if row else 0
            self._checked_at = now

    def _params(self, params: dict[str, Any], fair: bool) -> dict[str, Any]:
        return {
            **params,
            "fair": fair,
            "version": self._version,
            "vclock": self._vclock,
            "pass_tenants": list(self._passes),
            "pass_values": list(self._passes.values()),
        }

    async def claim(
        self, conn: AsyncConn, params: dict[str, Any], *, force: bool | None = None
    ) -> list[dict[str, Any]]:
        """Claim on the path the flow state asks for.

        Args:
            conn: The claim connection (autocommit).
            params: ``queues``, ``limit``, ``worker_id``, ``lease_seconds``.
            force: ``WorkerSettings.fair``: ``True`` fair, ``False`` priority order between
                tenants, ``None`` the database's switch (``set_fair_claiming``, on by default).
                Limits are honoured either way.
        """
        now = time.monotonic()
        if now - self._stats_checked_at >= STATS_CHECK:
            self._stats_checked_at = now
            # Beside the claims, never before one: ANALYZE of a 100k-job jobs_live takes
            # ~0.1 s, which a claim waiting for it added to the start of every job it took
            # (a small tenant's burst arriving right after another tenant's backlog).
            if self._stats_task is None or self._stats_task.done():
                self._stats_task = asyncio.create_task(self._refresh_stats())
        await self._read_state(conn)
        rows: list[dict[str, Any]] = []
        for _ in range(3):  # the state may change between our read and the claim
            fair = self._fair if force is None else force
            self._limited = self._enabled
            self._claim_sent = time.monotonic()
            if self._enabled:
                rows = await self._claim_limited(conn, self._params(params, True))
                break
            cur = await conn.execute(self._db.queries.claim_jobs, self._params(params, fair))
            rows = list(await cur.fetchall())
            if rows:
                break
            version = self._version
            await self._read_state(conn, fresh=True)
            if self._version == version:
                break
        self._advance(rows)
        self._empty_claims = 0 if rows else self._empty_claims + 1
        return rows

    async def claim_after_empty(
        self, conn: AsyncConn, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Kept for stores that run ``claim_jobs`` themselves: :meth:`claim` already did."""
        return []

    def _advance(self, rows: list[dict[str, Any]]) -> None:
        """Stride scheduling: served tenants move their pass past their last job's start."""
        starts = [r["fair_vstart"] for r in rows if r.get("fair_vstart") is not None]
        if not starts:
            return
        for row in rows:
            after = row.get("fair_pass")
            if after is not None and after > self._passes.get(row["tenant"], -math.inf):
                self._passes[row["tenant"]] = after
        # The virtual clock is the start of the last job dispatched: never above the pass of an
        # active tenant that was not served (it would have come first), so only tenants that
        # return from idle are lifted to it. Passes at or below it say nothing more.
        self._vclock = max(self._vclock, max(starts))
        self._passes = {t: p for t, p in self._passes.items() if p > self._vclock}

    async def _claim_limited(self, conn: AsyncConn, params: dict[str, Any]) -> list[dict[str, Any]]:
        q = self._db.queries
        async with conn.transaction():
            await conn.execute(q.flow_claim_lock, {"key": self._key})
            cur = await conn.execute(q.claim_jobs_fair, params)
            return list(await cur.fetchall())

    async def _refresh_stats(self) -> None:
        """ANALYZE jobs_live when it changed a lot since the last one (one worker at a time),
        on a pooled connection. Fresh statistics only make later plans better, so a failure
        is logged and the next check tries again."""
        q = self._db.queries
        try:
            async with self._db.connection() as conn:
                cur = await conn.execute(q.fair_stats_stale, {"table": _live_table(self._db)})
                row = await cur.fetchone()
                if not (row and row["stale"]):
                    return
                async with conn.transaction():
                    cur = await conn.execute(q.fair_stats_lock, {"key": self._key + ":analyze"})
                    got = await cur.fetchone()
                    if got and got["got"]:
                        await conn.execute(q.fair_index_analyze)
        except Exception as exc:  # noqa: BLE001 - background upkeep; the claims go on
            logger.debug("could not refresh jobs_live's statistics: %s", exc)

    async def close(self) -> None:
        """Stop a statistics refresh still running (the store is closing)."""
        task, self._stats_task = self._stats_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def idle_delay(
        self, delay: float, *, due_in: float | None = None, asked_at: float | None = None
    ) -> float:
        """Due jobs exist but the last claim took none: poll again soon rather than spin.

        Unless the first of them fell due after that claim was sent: the claim found nothing
        because nothing was due yet, so claim again now (backing off held a job that fell due
        while an empty claim ran, as one woken by a NOTIFY just before its time does, up to
        ``BLOCKED_POLL`` late). ``due_in``: the server's ``min(run_at) - now()`` of a statement
        sent at ``asked_at`` (``time.monotonic()``); the claim's ``now()`` was about
        ``asked_at - claim sent`` before that statement's, durations on both sides, so the
        clocks of the worker and the server need not agree. A due job that is really held back
        is seen by the next claim too, which then backs off.
        """
        if delay <= 0 and self._empty_claims:
            fell_due_since = (
                due_in is not None and asked_at is not None and due_in > self._claim_sent - asked_at
            )
            if fell_due_since:
                return 0.0
            backoff = BLOCKED_POLL * 2.0 ** max(self._empty_claims - 1, 0)
            return min(backoff, BLOCKED_POLL_MAX)
        return delay
