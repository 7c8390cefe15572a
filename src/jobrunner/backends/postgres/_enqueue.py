"""Writing jobs: the statements of an enqueue, run by the async runner and its sync twin.

An enqueue is written once, as a generator of statements (:func:`insert_one`,
:func:`insert_many`): each ``yield`` hands over a statement and gets back its first row (a
tuple, or ``None``), and the generator returns the handles. :func:`run_async` and
:func:`run_sync` execute it on an async or a sync psycopg connection, so
:class:`~jobrunner.backends.postgres.PostgresJobRunner` and
:class:`~jobrunner.SyncJobRunner` (``connection=`` a sync connection) share one code path.
On a caller's connection (:func:`enqueue_on`, :func:`enqueue_on_sync` and their batch
forms) the statements run inside a savepoint, so a refused job never aborts the caller's
transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row

from jobrunner._db._errors import translate_errors
from jobrunner._db._queries import Queries
from jobrunner._db._savepoint import caller_savepoint, caller_savepoint_sync
from jobrunner._errors import InvalidArgumentError
from jobrunner._models import ScheduledJob

__all__ = [
    "BULK_BATCH",
    "BulkPayloads",
    "Steps",
    "async_connection",
    "enqueue_many_on",
    "enqueue_many_on_sync",
    "enqueue_on",
    "enqueue_on_sync",
    "handle",
    "insert_many",
    "insert_one",
    "run_async",
    "run_sync",
    "sync_connection",
]

#: Jobs per ``insert_jobs_bulk`` statement.
BULK_BATCH = 1000

T = TypeVar("T")

#: A statement and its parameters.
Statement = tuple[str, Mapping[str, Any]]
#: Statements to run in order; each gets the first row of the one before, the return value
#: is the result.
Steps = Generator[Statement, tuple[Any, ...] | None, T]


class BulkPayloads:
    """Validated bulk payloads as JSON texts; a slice is ONE JSON array text.

    Performance (docs/performance.md): the texts come from validation's own ``json.dumps``, and
    a batch travels as one ``jsonb`` parameter instead of a ``jsonb[]`` that psycopg would
    serialise and quote element by element (which cost more than the insert itself).
    """

    __slots__ = ("_texts",)

    def __init__(self, texts: list[str]) -> None:
        self._texts = texts

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, index: slice) -> str:
        return "[" + ",".join(self._texts[index]) + "]"


def handle(job_id: Any, tenant: uuid.UUID, *, created: bool) -> ScheduledJob:
    """The :class:`ScheduledJob` returned for a written (or found) job."""
    key = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    return ScheduledJob(job_id=key, external_id=str(key), tenant=tenant, created=created)


# -- the statements ----------------------------------------------------------------------------
def insert_one(queries: Queries, params: Mapping[str, Any]) -> Steps[ScheduledJob | None]:
    """Insert one job (``insert_job`` parameters); with a singleton key already held, find
    the holder. ``None``: the holder finished between the two statements, run again."""
    row = yield queries.insert_job, params
    if row is not None:
        return handle(row[0], params["tenant"], created=True)
    if params["singleton_key"] is not None:
        existing = yield queries.find_singleton, params
        if existing is not None:
            return handle(existing[0], params["tenant"], created=False)
    return None


def insert_many(
    queries: Queries,
    base: Mapping[str, Any],
    ids: Sequence[uuid.UUID],
    payloads: BulkPayloads,
) -> Steps[list[ScheduledJob]]:
    """Insert a batch, one ``insert_jobs_bulk`` statement per :data:`BULK_BATCH` jobs."""
    for start in range(0, len(ids), BULK_BATCH):
        params = dict(base)
        params["job_ids"] = ids[start : start + BULK_BATCH]
        params["datas"] = payloads[start : start + BULK_BATCH]
        yield queries.insert_jobs_bulk, params
    return [handle(i, base["tenant"], created=True) for i in ids]


# -- running them ------------------------------------------------------------------------------
async def run_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T]) -> T:
    """Run ``steps`` on an async connection (in its current transaction, if any)."""
    # Tuple rows whatever row factory the connection uses.
    cur = conn.cursor(row_factory=tuple_row)
    try:
        statement = next(steps)
        while True:
            await cur.execute(*statement)
            row = await cur.fetchone() if cur.description is not None else None
            statement = steps.send(row)
    except StopIteration as done:
        result: T = done.value
        return result


def run_sync(conn: psycopg.Connection[Any], steps: Steps[T]) -> T:
    """Run ``steps`` on a sync connection (in its current transaction, if any)."""
    cur = conn.cursor(row_factory=tuple_row)
    try:
        statement = next(steps)
        while True:
            cur.execute(*statement)
            row = cur.fetchone() if cur.description is not None else None
            statement = steps.send(row)
    except StopIteration as done:
        result: T = done.value
        return result


# -- on the caller's connection ----------------------------------------------------------------
async def enqueue_on(conn: Any, queries: Queries, params: Mapping[str, Any]) -> ScheduledJob:
    """Write one job in the caller's async transaction, inside a savepoint."""
    caller = async_connection(conn)
    while True:
        with translate_errors():
            async with caller_savepoint(caller, queries):
                written = await run_async(caller, insert_one(queries, params))
        if written is not None:
            return written


def enqueue_on_sync(conn: Any, queries: Queries, params: Mapping[str, Any]) -> ScheduledJob:
    """:func:`enqueue_on` on the caller's sync connection."""
    caller = sync_connection(conn)
    while True:
        with translate_errors(), caller_savepoint_sync(caller, queries):
            written = run_sync(caller, insert_one(queries, params))
        if written is not None:
            return written


async def enqueue_many_on(
    conn: Any,
    queries: Queries,
    base: Mapping[str, Any],
    ids: Sequence[uuid.UUID],
    payloads: BulkPayloads,
) -> list[ScheduledJob]:
    """Write a batch in the caller's async transaction, inside a savepoint."""
    caller = async_connection(conn)
    with translate_errors():
        async with caller_savepoint(caller, queries):
            return await run_async(caller, insert_many(queries, base, ids, payloads))


def enqueue_many_on_sync(
    conn: Any,
    queries: Queries,
    base: Mapping[str, Any],
    ids: Sequence[uuid.UUID],
    payloads: BulkPayloads,
) -> list[ScheduledJob]:
    """:func:`enqueue_many_on` on the caller's sync connection."""
    caller = sync_connection(conn)
    with translate_errors(), caller_savepoint_sync(caller, queries):
        return run_sync(caller, insert_many(queries, base, ids, payloads))


def async_connection(conn: object) -> psycopg.AsyncConnection[Any]:
    """``conn`` if it is an async psycopg connection.

    Raises:
        InvalidArgumentError: anything else (a sync connection belongs to the sync runner).
    """
    if not isinstance(conn, psycopg.AsyncConnection):
        raise InvalidArgumentError(
            "connection must be an open psycopg.AsyncConnection (use the sync runner with a "
            "sync connection)"
        )
    return conn


def sync_connection(conn: object) -> psycopg.Connection[Any]:
    """``conn`` if it is a sync psycopg connection.

    Raises:
        InvalidArgumentError: anything else.
    """
    if not isinstance(conn, psycopg.Connection):
        raise InvalidArgumentError("connection must be an open sync psycopg.Connection")
    return conn
