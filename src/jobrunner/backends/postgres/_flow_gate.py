"""The claiming side of flow control: which claim a worker's store runs, and the fair claim.

The rules themselves are set through :class:`~jobrunner.backends.postgres.FlowControl`
(``_flow.py``); everything lives in the database (migration 0004, ``fairness.sql``):

* While flow control is off (no rule, fair claiming off) the plain claim runs; that claim
  yields no rows once ``flow_state.enabled`` is set, and the gate then switches over, so a
  rule applies to every claim that starts after the change commits.
* Claims that must honour rules (``claim_jobs_fair``) run under one transaction-level advisory
  lock per schema: two claimers can never both count the same free slot.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    from jobrunner._db._database import AsyncConn, Database

__all__ = ["FlowGate", "ensure_fair_index", "flow_lock_key"]

#: Seconds a worker trusts its cached "flow control is on/off" flag. Turning flow control on is
#: seen at once anyway (the plain claim yields); this only bounds how long a worker keeps using
#: the fair claim after the last rule is removed.
STATE_TTL = 2.0

#: Seconds between claim attempts while due jobs exist but rules hold them all back; doubles
#: with every further empty claim up to BLOCKED_POLL_MAX (a paused tenant's backlog must not
#: keep every worker claiming ten times a second). Changes and own completions wake at once.
BLOCKED_POLL = 0.1
BLOCKED_POLL_MAX = 1.0

#: Seconds between a fair-claiming worker's checks that the jobs table's statistics are fresh.
STATS_CHECK = 1.0


def flow_lock_key(schema: str) -> str:
    """The advisory lock every fair claim and rule change of ``schema`` takes."""
    return f"jobrunner-flow:{schema}"


def _jobs_table(db: Database) -> str:
    return sql.Identifier(db.schema).as_string(None) + ".jobs"


async def ensure_fair_index(db: Database) -> None:
    """Build the fair claim's index unless it exists (CONCURRENTLY: writers are not blocked).

    Not a migration on purpose: every insert would pay for it even with flow control off.
    A build that failed earlier leaves an invalid index behind; it is dropped and rebuilt.
    """
    name = sql.Identifier(db.schema).as_string(None) + ".jobs_fair_idx"
    q = db.queries
    async with db.connection() as conn:  # autocommit: CONCURRENTLY cannot run in a transaction
        cur = await conn.execute(q.fair_index_state, {"index": name})
        row = await cur.fetchone()
        if row is not None and row["valid"]:
            return
        if row is not None:
            await conn.execute(q.fair_index_drop)
        await conn.execute(q.fair_index_create)
        await conn.execute(q.fair_index_analyze)


class FlowGate:
    """One worker's view of flow control: the cached on/off flag and the fair claim.

    Args:
        db: The worker's database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._force = False
        self._enabled = False
        self._checked_at = -math.inf
        self._key = flow_lock_key(db.schema)
        self._indexed = False
        self._empty_claims = 0
        self._stats_checked_at = -math.inf

    @property
    def active(self) -> bool:
        """Whether claims go through the fair path (forced, or flow control on when last read)."""
        return self._force or self._enabled

    async def _is_enabled(self, conn: AsyncConn, *, fresh: bool = False) -> bool:
        now = time.monotonic()
        if fresh or now - self._checked_at >= STATE_TTL:
            cur = await conn.execute(self._db.queries.flow_state)
            row = await cur.fetchone()
            self._enabled = bool(row and row["enabled"])
            self._checked_at = now
        return self._enabled

    async def claim(
        self, conn: AsyncConn, params: dict[str, Any], *, force: bool = False
    ) -> list[dict[str, Any]] | None:
        """Claim fairly when flow control is on (or ``force``: ``WorkerSettings.fair``);
        ``None`` means "use the plain claim"."""
        self._force = force
        if force or await self._is_enabled(conn):
            return await self._claim_fair(conn, params)
        return None

    async def claim_after_empty(
        self, conn: AsyncConn, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The plain claim found nothing: flow control may have just been switched on."""
        if await self._is_enabled(conn, fresh=True):
            return await self._claim_fair(conn, params)
        return []

    async def _claim_fair(self, conn: AsyncConn, params: dict[str, Any]) -> list[dict[str, Any]]:
        q = self._db.queries
        if self._force and not self._indexed:
            # forced on while flow control may be off in the database: nothing built the index
            await ensure_fair_index(self._db)
            self._indexed = True
        if time.monotonic() - self._stats_checked_at >= STATS_CHECK:
            await self._refresh_stats(conn)
        async with conn.transaction():
            await conn.execute(q.flow_claim_lock, {"key": self._key})
            cur = await conn.execute(q.claim_jobs_fair, params)
            rows = await cur.fetchall()
        self._empty_claims = 0 if rows else self._empty_claims + 1
        return rows

    async def _refresh_stats(self, conn: AsyncConn) -> None:
        """ANALYZE jobs when it changed a lot since the last one (one worker at a time)."""
        self._stats_checked_at = time.monotonic()
        q = self._db.queries
        cur = await conn.execute(q.fair_stats_stale, {"table": _jobs_table(self._db)})
        row = await cur.fetchone()
        if not (row and row["stale"]):
            return
        async with conn.transaction():
            cur = await conn.execute(q.fair_stats_lock, {"key": self._key + ":analyze"})
            got = await cur.fetchone()
            if got and got["got"]:
                await conn.execute(q.fair_index_analyze)

    def idle_delay(self, delay: float) -> float:
        """Due jobs exist but none was claimable: poll again soon rather than spin."""
        if self.active and delay <= 0:
            backoff = BLOCKED_POLL * 2.0 ** max(self._empty_claims - 1, 0)
            return min(backoff, BLOCKED_POLL_MAX)
        return delay
