"""Translating psycopg's exceptions into jobrunner's at the boundary.

Two kinds, because callers must react differently: :class:`UnavailableError` means the
database could not do the work *now* (connection lost, server starting or shutting down, out
of connections, a lock or serialisation conflict) and the same statement may succeed later;
:class:`DatabaseError` means this statement can never succeed as sent (a value out of range or
too large, a constraint, a program limit), so retrying it would loop forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import psycopg
import psycopg_pool
import tenacity

from jobrunner._errors import DatabaseError, JobRunnerError, UnavailableError

# SQLSTATE classes and codes that describe the server's condition, not the statement:
# 08 connection exception, 40 transaction rollback (serialization failure, deadlock),
# 53 insufficient resources (except 53400 configuration limit exceeded: the request itself),
# 57 operator intervention (admin shutdown, cannot connect now, query canceled), 58 system
# error (I/O), 55P03 lock not available, 55006 object in use, 25006 read-only transaction (a
# standby after failover), XX000 internal error is permanent for the statement.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_CODES = frozenset({"55P03", "55006", "25006"})
_PERMANENT_CODES = frozenset({"53400"})

#: Tries of a statement that lost a conflict (see :func:`retry_conflicts`).
_CONFLICT_TRIES = 5

T = TypeVar("T")


def is_transient(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is an outage or a conflict (worth retrying) rather than a statement
    that can never succeed."""
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: the client library failed (connection closed, broken pipe, timeout).
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    if state in _PERMANENT_CODES:
        return False
    return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_CODES


def translated(exc: psycopg.Error) -> JobRunnerError:
    """The error :func:`translate_errors` raises for ``exc`` (raise it ``from exc``)."""
    if isinstance(exc, psycopg_pool.PoolTimeout) or is_transient(exc):
        return UnavailableError(f"database unavailable: {exc}")
    return DatabaseError(f"database error: {exc}")


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise driver errors as :class:`UnavailableError` (transient) or
    :class:`DatabaseError` (this statement can never succeed)."""
    try:
        yield
    except JobRunnerError:
        raise
    except psycopg.Error as exc:
        raise translated(exc) from exc


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` (translated or not) is a serialisation failure or a deadlock: the
    statement lost a race with another one and the same statement, run again, sees the winner.

    The common case since jobs is partitioned (0009): a statement waited for a row that the
    other transaction then moved to jobs_finished (an outcome or a cancel), which READ
    COMMITTED cannot follow across partitions ("tuple to be locked was already moved to
    another partition due to concurrent update").
    """
    cause = exc.__cause__ if isinstance(exc, UnavailableError) else exc
    return isinstance(cause, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected)


async def retry_conflicts(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` (one short statement or transaction) and run it again when it lost a
    conflict (:func:`is_conflict`), a few times with a little jitter; other errors propagate."""
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_conflict),
        stop=tenacity.stop_after_attempt(_CONFLICT_TRIES),
        wait=tenacity.wait_random(0, 0.01),
        reraise=True,
    )

    async def attempt() -> T:  # a coroutine function: tenacity awaits it (a lambda it would not)
        return await call()

    return await retrying(attempt)
