"""A connection pool bound to one jobrunner schema, with its queries and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal, cast

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from jobrunner._db._errors import translate_errors, translated
from jobrunner._db._loaders import tolerant_adapters
from jobrunner._db._migrate import check_current, migrate
from jobrunner._db._queries import Queries, queries_for
from jobrunner._db._waiters import JobWaiters
from jobrunner._errors import InvalidArgumentError

logger = logging.getLogger("jobrunner.db")

# At most 53 characters: NOTIFY channels are named <schema>_<suffix> (longest suffix
# "_schedules") and PostgreSQL refuses channel names over 63 bytes.
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,52}$")

AsyncConn = psycopg.AsyncConnection[dict[str, Any]]

#: What a runner's start does with the schema: ``True`` applies pending migrations (creating
#: the schema if needed), ``"check"`` only verifies that it is present and current (read-only
#: tools), ``False`` neither.
AutoMigrate = bool | Literal["check"]

#: Session settings of every connection jobrunner opens. JIT compilation off: jobrunner runs
#: short statements over index ranges, yet the claim's CTEs are estimated far above
#: ``jit_above_cost`` on a queue of a few thousand jobs, and compiling then took ~50 ms of a
#: 55 ms claim (docs/performance.md, "Why JIT is off").
_SESSION_SETUP = "SET jit = off"


async def _configure(conn: psycopg.AsyncConnection[Any], *extra: str) -> None:
    for statement in (_SESSION_SETUP, *extra):
        await conn.execute(statement)


def check_schema(schema: str) -> str:
    """Schema names are identifiers; restrict them so channel names derived from them are too."""
    if not isinstance(schema, str) or not _SCHEMA.match(schema):
        raise InvalidArgumentError(f"invalid schema name {schema!r}")
    return schema


def check_auto_migrate(value: object) -> AutoMigrate:
    """``auto_migrate`` is ``True``, ``False`` or ``"check"``; anything else is refused."""
    if isinstance(value, bool):
        return value
    if value == "check":
        return "check"
    raise InvalidArgumentError(f"auto_migrate must be True, False or 'check', got {value!r}")


class PoolConnection(psycopg.AsyncConnection[dict[str, Any]]):
    """The pool's connections: psycopg's, keeping one tuple-row cursor for jobrunner's
    statement steps (:func:`~jobrunner.backends.postgres._enqueue.run_async`).

    A new cursor copies the connection's adapters and looks up a dumper for every parameter
    again; the kept one keeps both, and psycopg keeps its transformer while the statement is
    the same: a single enqueue's client CPU -11 % (docs/performance.md, "Enqueue"). A
    pooled connection serves one checkout at a time, and a step's fetch follows its execute
    with no suspension between them, so one cursor per connection is enough.
    """

    _steps_cursor: psycopg.AsyncCursor[tuple[Any, ...]] | None = None

    def steps_cursor(self) -> psycopg.AsyncCursor[tuple[Any, ...]]:
        """The connection's tuple-row cursor for statement steps."""
        cur = self._steps_cursor
        if cur is None or cur.closed:
            cur = self._steps_cursor = self.cursor(row_factory=tuple_row)
        return cur


class PooledConnection:
    """``async with`` a connection of ``pool`` (what :meth:`Database.connection` returns).

    Leaves it as the pool's own context manager does: a transaction left open is committed
    (rolled back after an error) and the connection goes back to the pool, which discards
    a broken one; driver errors, inside the block or not, are translated
    (:func:`~jobrunner._db._errors.translate_errors`). One class rather than three nested
    generator context managers (the pool's, the check's, the translation's): every statement
    passes here, and a checkout and return took 11 us with them, 6 us without
    (docs/performance.md, "Enqueue").
    """

    __slots__ = ("_checked", "_conn", "_pool")

    def __init__(self, pool: AsyncConnectionPool[Any], checked: bool) -> None:
        self._pool = pool
        self._checked = checked

    async def __aenter__(self) -> AsyncConn:
        with translate_errors():
            conn = await self._pool.getconn()
            if self._checked:
                conn = await self._alive(conn)
        self._conn = cast(AsyncConn, conn)
        return self._conn

    async def _alive(self, conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncConnection[Any]:
        """``conn`` if it answers, else another pooled one that does."""
        pool = self._pool
        for _ in range(pool.max_size + 1):
            try:
                await AsyncConnectionPool.check_connection(conn)
            except psycopg.OperationalError:
                await pool.putconn(conn)  # broken: the pool discards it
                conn = await pool.getconn()
                continue
            except BaseException:
                await pool.putconn(conn)
                raise
            return conn
        # Every connection we were given was dead: a fresh one tells why, or works.
        try:
            await AsyncConnectionPool.check_connection(conn)
        except BaseException:
            await pool.putconn(conn)
            raise
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        conn = self._conn
        try:
            with translate_errors():
                # pgconn's status is an int (conn.info builds an enum each time)
                if not conn.closed and conn.pgconn.transaction_status != TransactionStatus.IDLE:
                    await conn.__aexit__(exc_type, exc, traceback)  # commit, or roll back
        finally:
            with translate_errors():
                await self._pool.putconn(conn)
        if isinstance(exc, psycopg.Error):
            raise translated(exc) from exc


class Database:
    """A pool of async connections for one schema.

    Args:
        conninfo: libpq connection string or URL.
        schema: Schema holding the jobrunner tables.
        min_size: Connections kept open.
        max_size: Upper bound on open connections.
    """

    def __init__(
        self, conninfo: str, *, schema: str = "jobrunner", min_size: int = 1, max_size: int = 10
    ) -> None:
        if not isinstance(conninfo, str) or not conninfo:
            raise InvalidArgumentError("conninfo must be a non-empty connection string or URL")
        for name, size in (("min_size", min_size), ("max_size", max_size)):
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise InvalidArgumentError(f"pool {name} must be a positive integer")
        self.conninfo = conninfo
        self.schema = check_schema(schema)
        min_size = min(min_size, max_size)
        self.queries: Queries = queries_for(self.schema)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            # Tolerant timestamp loaders: a row holding 'infinity' or a year past 9999 (written
            # by hand) loads clamped instead of failing every listing (see _loaders).
            kwargs={"autocommit": True, "row_factory": dict_row, "context": tolerant_adapters()},
            connection_class=PoolConnection,
            open=False,
            configure=_configure,
            name=f"jobrunner-{schema}",
            # No pool-wide liveness check: it costs a round trip per checkout. connection()
            # runs it itself unless the caller can retry (see its docstring).
        )
        self._opened = False
        self._waiters: JobWaiters | None = None

    @property
    def waiters(self) -> JobWaiters:
        """The process's waiters for finished jobs of this schema (one LISTEN connection)."""
        if self._waiters is None:
            self._waiters = JobWaiters(self.schema, self.dedicated_connection)
        return self._waiters

    @property
    def channel_jobs(self) -> str:
        """NOTIFY channel announcing new due jobs (payload: queue name)."""
        return f"{self.schema}_jobs"

    @property
    def channel_cancel(self) -> str:
        """NOTIFY channel announcing cancellations (payload: ``job_id:lease_token``)."""
        return f"{self.schema}_cancel"

    @property
    def channel_schedules(self) -> str:
        """NOTIFY channel telling tickers that a schedule changed (payload: schedule id)."""
        return f"{self.schema}_schedules"

    async def open(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        """Open the pool (idempotent)."""
        if self._opened:
            return
        with translate_errors():
            await self._pool.open(wait=wait, timeout=timeout)
        self._opened = True

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        waiters, self._waiters = self._waiters, None
        if waiters is not None:
            await waiters.close()
        if self._opened:
            self._opened = False
            await self._pool.close()

    def connection(self, *, checked: bool = True) -> PooledConnection:
        """A pooled autocommit connection with dict rows (``async with``); driver errors are
        translated.

        Args:
            checked: Make sure the connection is alive before handing it out (one round trip;
                a dead one is discarded and another taken). Callers whose statement is
                idempotent pass ``False`` and, on :class:`UnavailableError`, retry once with a
                checked connection: the hot enqueue path saves the round trip that way
                (docs/performance.md).
        """
        return PooledConnection(self._pool, checked)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConn]:
        """A pooled connection inside one transaction."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def migrate(self, *, target: int | None = None) -> list[int]:
        """Apply pending migrations; returns the versions applied."""
        with translate_errors():
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            ) as conn:
                return await migrate(conn, self.schema, target=target)

    async def check_migrated(self) -> None:
        """Verify the schema exists with every migration applied; creates and changes nothing.

        Raises:
            ConfigurationError: the schema is missing or behind (run ``jobrunner migrate``).
        """
        with translate_errors():
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            ) as conn:
                await check_current(conn, self.schema)

    async def prepare_schema(self, auto_migrate: AutoMigrate) -> None:
        """Apply migrations (``True``), only check them (``"check"``), or do nothing."""
        mode = check_auto_migrate(auto_migrate)
        if mode == "check":
            await self.check_migrated()
        elif mode:
            await self.migrate()

    async def dedicated_connection(self, *session_setup: str) -> AsyncConn:
        """A new connection outside the pool (LISTEN needs one it keeps).

        Args:
            session_setup: ``SET`` statements the connection runs once made, after the ones
                every jobrunner connection runs (a statement's failure closes it).
        """
        with translate_errors():
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, row_factory=dict_row, context=tolerant_adapters()
            )
            try:
                await _configure(conn, *session_setup)
            except BaseException:
                await conn.close()
                raise
            return conn

    async def ping(self, timeout: float = 5.0) -> bool:
        """Whether a trivial query succeeds within ``timeout`` seconds."""
        try:
            # Bounded: with the server away the pool would wait its full checkout timeout.
            async with asyncio.timeout(timeout), self.connection() as conn:
                await conn.execute(self.queries.ping)
            return True
        except Exception:  # health checks report, never raise
            logger.debug("database ping failed", exc_info=True)
            return False
