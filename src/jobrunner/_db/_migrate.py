"""Versioned migrations: numbered SQL files applied in order, once, under an advisory lock."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import psycopg
import tenacity
from psycopg import sql

from jobrunner._db._queries import queries_for
from jobrunner._errors import ConfigurationError, UnavailableError

logger = logging.getLogger("jobrunner.migrate")

T = TypeVar("T")

#: Default seconds start-up keeps retrying a database that cannot be reached.
STARTUP_TIMEOUT = 30.0

# Reaching the server but being refused will not get better by waiting.
_PERMANENT = re.compile(
    r"authentication failed|no pg_hba\.conf entry|does not exist|permission denied"
    r"|password|certificate|SSL .*(required|unsupported|not supported)|invalid .*option",
    re.IGNORECASE,
)
_PERMANENT_STATES = ("28", "3D")  # invalid authorization; invalid catalog (database) name


def is_transient(exc: BaseException) -> bool:
    """Whether a start-up failure is worth retrying: the server is not there (yet) or is
    starting / shutting down, as opposed to refusing us (credentials, unknown database)."""
    if not isinstance(exc, UnavailableError):
        return False  # DatabaseError, InvalidArgumentError, ...: a real problem, fail now
    cause = exc.__cause__
    state = getattr(cause, "sqlstate", None) or ""
    if state.startswith(_PERMANENT_STATES):
        return False
    return not _PERMANENT.search(str(cause if cause is not None else exc))


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    timeout: float = STARTUP_TIMEOUT,
    what: str = "database",
    initial: float = 0.1,
    max_wait: float = 2.0,
) -> T:
    """Run ``operation``, retrying transient :class:`UnavailableError`s with exponential
    backoff (tenacity) for up to ``timeout`` seconds in total; other errors fail at once.

    Raises:
        UnavailableError: still unreachable after ``timeout`` seconds (the last error chained).
    """
    deadline = time.monotonic() + timeout
    backoff = tenacity.wait_exponential(multiplier=initial, max=max_wait) + tenacity.wait_random(
        0, initial
    )

    def wait(state: tenacity.RetryCallState) -> float:
        # Never sleep past the deadline: the last attempt happens at it.
        return max(min(backoff(state), deadline - time.monotonic()), 0.0)

    def log(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        logger.warning(
            "%s unavailable (%s); retrying in %.2f s",
            what,
            error,
            state.upcoming_sleep,
        )

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_delay(timeout),
        wait=wait,
        before_sleep=log,
        sleep=asyncio.sleep,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await operation()
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        raise UnavailableError(
            f"{what} still unavailable after retrying for {timeout:g} s: {last}"
        ) from last
    raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises


_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    text: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("jobrunner._sql").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def _lock_key(schema: str) -> str:
    return f"jobrunner-migrate:{schema}"


async def migrate(
    conn: psycopg.AsyncConnection[Any], schema: str, *, target: int | None = None
) -> list[int]:
    """Apply pending migrations to ``schema``; safe when several processes run it at once.

    Each migration runs in its own transaction holding a transaction-level advisory lock, so
    concurrent callers serialise and skip what another already applied.

    Returns:
        The versions applied by this call.
    """
    applied: list[int] = []
    q = queries_for(schema)
    for migration in available_migrations():
        if target is not None and migration.version > target:
            break
        async with conn.transaction():
            await conn.execute(q.migrator_lock, {"key": _lock_key(schema)})
            await conn.execute(q.migrator_prepare)
            cur = await conn.execute(q.migrator_is_applied, {"version": migration.version})
            if await cur.fetchone():
                continue
            await conn.execute(
                q.migrator_search_path,
                {"path": sql.Identifier(schema).as_string(None) + ", public"},
            )
            await conn.execute(migration.text.encode())
            await conn.execute(
                q.migrator_record, {"version": migration.version, "name": migration.name}
            )
            applied.append(migration.version)
            logger.info(
                "applied migration %04d_%s to schema %s", migration.version, migration.name, schema
            )
    return applied


async def current_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The highest applied migration version, 0 when none."""
    q = queries_for(schema)
    table = sql.Identifier(schema).as_string(None) + ".schema_migrations"
    cur = await conn.execute(q.migrator_has_table, {"table": table})
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute(q.migrator_version)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def _run_migrate_hint(schema: str) -> str:
    if schema == "jobrunner":
        return "run `jobrunner migrate`"
    return f"run `jobrunner migrate --schema {schema}`"


async def check_current(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Make sure ``schema`` exists with every shipped migration applied, changing nothing.

    Read-only tools (the CLI's listings, the dashboard) open the database this way, so a
    mistyped ``--schema`` fails instead of creating an empty schema. Versions newer than this
    release knows are accepted (a newer release migrated first; migrations only add). Under
    row-level security a role other than the owner sees no ``schema_migrations`` rows; then
    only the table's presence can be checked.

    Raises:
        ConfigurationError: the schema does not exist, has no jobrunner tables, or lacks
            migrations; the message says to run ``jobrunner migrate``.
    """
    hint = _run_migrate_hint(schema)
    q = queries_for(schema)
    cur = await conn.execute(q.migrator_schema_exists, {"schema_name": schema})
    if await cur.fetchone() is None:
        raise ConfigurationError(f"schema {schema!r} does not exist; {hint}")
    table = sql.Identifier(schema).as_string(None) + ".schema_migrations"
    cur = await conn.execute(q.migrator_has_table, {"table": table})
    row = await cur.fetchone()
    if not row or not row[0]:
        raise ConfigurationError(f"schema {schema!r} has no jobrunner tables; {hint}")
    cur = await conn.execute(q.migrator_applied, {"table": table})
    row = await cur.fetchone()
    applied, hidden_by_rls = (set(row[0]), bool(row[1])) if row else (set(), False)
    if not applied and hidden_by_rls:
        return
    missing = [m for m in available_migrations() if m.version not in applied]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise ConfigurationError(
            f"schema {schema!r} is not at the current migration (missing {names}); {hint}"
        )
