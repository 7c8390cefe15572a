"""Translating psycopg's exceptions into jobrunner's at the boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import psycopg_pool

from jobrunner._errors import DatabaseError, JobRunnerError, UnavailableError


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise driver errors as :class:`DatabaseError` / :class:`UnavailableError`."""
    try:
        yield
    except JobRunnerError:
        raise
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        raise UnavailableError(f"database unavailable: {exc}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"database error: {exc}") from exc
