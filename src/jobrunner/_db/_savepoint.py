"""Writes on a caller's own connection (``connection=``) that never abort the caller's
transaction.

Every argument is validated before the first statement; these savepoints cover what only the
database can refuse. A statement that fails rolls back to the savepoint, so the caller's
transaction stays usable (and can still commit its own work); the error is raised as usual.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from jobrunner._db._queries import Queries

logger = logging.getLogger("jobrunner.db")

_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def _needs_savepoint(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    # In autocommit mode outside a transaction block each statement commits on its own: a
    # failing one leaves nothing behind to protect. Otherwise (an open transaction, or a
    # non-autocommit connection whose first statement opens one) a failure would abort it.
    return not (conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE)


@contextlib.asynccontextmanager
async def caller_savepoint(
    conn: psycopg.AsyncConnection[Any], queries: Queries
) -> AsyncIterator[None]:
    """Run the block's statements on the caller's async connection inside a savepoint."""
    if not _needs_savepoint(conn):
        yield
        return
    await conn.execute(queries.caller_savepoint)
    try:
        yield
    except BaseException:
        if conn.info.transaction_status in _OPEN:
            try:
                await conn.execute(queries.caller_savepoint_rollback)
                await conn.execute(queries.caller_savepoint_release)
            except psycopg.Error:
                logger.warning("could not roll back to the enqueue savepoint", exc_info=True)
        raise
    await conn.execute(queries.caller_savepoint_release)


@contextlib.contextmanager
def caller_savepoint_sync(conn: psycopg.Connection[Any], queries: Queries) -> Iterator[None]:
    """:func:`caller_savepoint` for the caller's sync connection."""
    if not _needs_savepoint(conn):
        yield
        return
    conn.execute(queries.caller_savepoint)
    try:
        yield
    except BaseException:
        if conn.info.transaction_status in _OPEN:
            try:
                conn.execute(queries.caller_savepoint_rollback)
                conn.execute(queries.caller_savepoint_release)
            except psycopg.Error:
                logger.warning("could not roll back to the enqueue savepoint", exc_info=True)
        raise
    conn.execute(queries.caller_savepoint_release)
