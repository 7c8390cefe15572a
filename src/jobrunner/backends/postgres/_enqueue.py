"""Writing jobs: the statements of an enqueue, run by the async runner and its sync twin.

An enqueue is written once, as a generator of steps (:func:`insert_one`,
:func:`insert_many`): each ``yield`` hands over a statement (or a :class:`CopyIn`) and gets
back its first row (a tuple, or ``None``), and the generator returns the handles.
:func:`run_async` and :func:`run_sync` execute it on an async or a sync psycopg connection, so
:class:`~jobrunner.backends.postgres.PostgresJobRunner` and
:class:`~jobrunner.SyncJobRunner` (``connection=`` a sync connection) share one code path.
On a caller's connection (:func:`enqueue_on`, :func:`enqueue_on_sync` and their batch
forms) the statements run inside a savepoint, so a refused job never aborts the caller's
transaction.

A bulk enqueue (:class:`BulkJobs`) is two steps whatever its size: ``bulk_enqueue_start``
(the transaction's ``now()`` and one NOTIFY) and one binary ``COPY`` of every job into
``jobs_live`` (docs/performance.md, "Bulk enqueue").
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from jobrunner._db._database import PoolConnection
from jobrunner._db._errors import translate_errors
from jobrunner._db._queries import Queries
from jobrunner._db._savepoint import caller_savepoint, caller_savepoint_sync
from jobrunner._errors import DependencyError, InvalidArgumentError
from jobrunner._jobargs import JobArgs, new_job_ids
from jobrunner._models import ScheduledJob
from jobrunner._validation import iter_bulk_json

__all__ = [
    "BULK_BATCH",
    "COPY_CHUNK",
    "BulkJobs",
    "CopyIn",
    "Steps",
    "async_connection",
    "enqueue_many_on",
    "enqueue_many_on_sync",
    "enqueue_on",
    "enqueue_on_sync",
    "handle",
    "insert_dependent",
    "insert_many",
    "insert_one",
    "insert_one_dependent",
    "run_async",
    "run_sync",
    "sync_connection",
]

#: Jobs per ``insert_jobs_json`` statement.
BULK_BATCH = 1000
#: Jobs per chunk of COPY data: small enough that the database inserts one chunk while
#: Python encodes the next (docs/performance.md).
COPY_CHUNK = 250

T = TypeVar("T")

#: A statement and its parameters.
Statement = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class CopyIn:
    """A ``COPY ... FROM STDIN`` step: the statement and its data, sent chunk by chunk."""

    statement: str
    chunks: Iterable[bytes]


#: Steps to run in order; each gets the first row of the one before (``None`` after a COPY),
#: the return value is the result.
Steps = Generator[Statement | CopyIn, tuple[Any, ...] | None, T]

# Binary COPY (PostgreSQL's "Binary Format" of COPY): a header, per row the field count and
# each field as length + bytes (-1: NULL), a trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_NULL = struct.pack("!i", -1)
_FIELDS = struct.pack("!h", 15)  # the columns of copy_jobs_live
_ID_FIELD = struct.pack("!i", 16)
_JSONB_HEAD = struct.Struct("!iB")  # length, jsonb format version 1
_INT2 = struct.Struct("!ih")
_INT4 = struct.Struct("!ii")
_INT8 = struct.Struct("!iq")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


_new_object = object.__new__
_set_slot = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _uuid(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` for a value known to be a 128-bit UUID, without the checks
    (five times faster, a third of a bulk enqueue's Python time per job before). The same
    slots ``UUID.__init__`` sets; ``tests/test_enqueue.py`` compares both."""
    key: uuid.UUID = _new_object(uuid.UUID)
    _set_slot(key, "int", value)
    _set_slot(key, "is_safe", _SAFE_UNKNOWN)
    return key


def _micros(when: datetime) -> int:
    """A timezone-aware instant as PostgreSQL's binary timestamp: microseconds since 2000."""
    return (when - _PG_EPOCH) // _MICROSECOND


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("!i", len(raw)) + raw


def _jsonb(raw: bytes | None) -> bytes:
    """A binary ``jsonb`` field of JSON already encoded (UTF-8)."""
    if raw is None:
        return _NULL
    return _JSONB_HEAD.pack(len(raw) + 1, 1) + raw


class BulkJobs:
    """A bulk enqueue: what its jobs share (validated), their ids and their payloads.

    The ids are consecutive version 7 UUIDs (:func:`~jobrunner._jobargs.new_job_ids`), so the
    batch appends to the job indexes in input order.

    The payloads are checked and encoded while the COPY streams (:meth:`copy_chunks`): the
    database inserts a chunk while Python encodes the next one, and a refused payload aborts
    the COPY, so its transaction (or the caller's savepoint) writes nothing. The handles are
    built while the database finishes the last chunk.

    Performance (docs/performance.md): a job costs its payload's one JSON encode and a few
    bytes of COPY data; no per-job parameter object is built.

    Args:
        args: What the jobs share (validated).
        items: The payloads as given (:func:`~jobrunner._validation.bulk_items`).
        runner_type: ``jobs.runner_type`` of the jobs.
        channel: The NOTIFY channel of new jobs.
    """

    __slots__ = ("_handles", "args", "channel", "first_id", "items", "runner_type")

    def __init__(self, args: JobArgs, items: list[Any], runner_type: str, channel: str):
        self.args = args
        self.items = items
        self.runner_type = runner_type
        self.channel = channel
        self.first_id = new_job_ids(len(items))
        self._handles: list[ScheduledJob] | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[uuid.UUID]:
        """The jobs' ids, in input order."""
        first = self.first_id
        return [_uuid(first + i) for i in range(len(self.items))]

    def handles(self) -> list[ScheduledJob]:
        """The handles :meth:`~jobrunner.JobRunner.schedule_jobs` returns."""
        if self._handles is None:
            tenant = self.args.tenant
            self._handles = [ScheduledJob(key, str(key), tenant, True) for key in self.ids]
        return self._handles

    def start_params(self) -> dict[str, Any]:
        """The parameters of ``bulk_enqueue_start``."""
        return {"notify": True, "channel": self.channel, "queue": self.args.queue}

    def copy_chunks(self, now: datetime) -> Iterator[bytes]:
        """The COPY data of ``copy_jobs_live``, :data:`COPY_CHUNK` rows a chunk.

        Args:
            now: The transaction's ``now()``, as ``insert_job`` would use it.

        Raises:
            InvalidArgumentError: a payload is refused (the COPY is aborted).
        """
        args = self.args
        now_us = _micros(now)
        run_at_us = now_us if args.run_at is None else _micros(args.run_at)
        status = "queued" if run_at_us <= now_us else "pending"
        shared = b"".join(
            (
                _FIELDS,
                _ID_FIELD + args.tenant.bytes,
                _text(args.name),
                _jsonb(args.metadata_json),
                _text(status),
                _INT8.pack(8, now_us),  # created_at: timezone('utc', now()), same microseconds
                _INT8.pack(8, now_us),  # updated_at
                _ID_FIELD + args.user_id.bytes,
                _text(self.runner_type),
                _text(args.queue),
                _INT2.pack(2, args.priority),
                _INT8.pack(8, run_at_us),
                _INT4.pack(4, args.max_attempts),
                _jsonb(args.policy_json),
                _ID_FIELD,
            )
        )
        head = _JSONB_HEAD.pack
        key = self.first_id
        parts = [_COPY_HEADER]
        for data in iter_bulk_json(self.items):
            parts += (shared, key.to_bytes(16), head(len(data) + 1, 1), data)
            key += 1
            if len(parts) > 4 * COPY_CHUNK:
                yield b"".join(parts)
                parts = []
        parts.append(_COPY_TRAILER)
        yield b"".join(parts)
        # The database is inserting the last chunk meanwhile.
        self.handles()

    def payloads(self) -> list[bytes]:
        """Every payload, checked and encoded (the statements' path).

        Raises:
            InvalidArgumentError: a payload is refused.
        """
        return list(iter_bulk_json(self.items))

    def dependent_params(self) -> dict[str, Any]:
        """The shared parameters of :func:`insert_dependent` for the batch."""
        args = self.args
        return {
            "tenant": args.tenant,
            "name": args.name,
            "metadata": args.metadata_param,
            "run_at": args.run_at,
            "user_id": args.user_id,
            "runner_type": self.runner_type,
            "queue": args.queue,
            "priority": args.priority,
            "max_attempts": args.max_attempts,
            "policy": args.policy_param,
            "parent_job_id": args.parent_job_id,
            "depends_on": args.depends_on,
            "run_on_failure": args.run_on_failure,
            "notify": True,
            "channel": self.channel,
        }

    def json_params(self, payloads: list[bytes], start: int, stop: int) -> dict[str, Any]:
        """The parameters of ``insert_jobs_json`` for the jobs ``start:stop``."""
        args = self.args
        return {
            "tenant": args.tenant,
            "name": args.name,
            "metadata": args.metadata_param,
            "run_at": args.run_at,
            "user_id": args.user_id,
            "runner_type": self.runner_type,
            "queue": args.queue,
            "priority": args.priority,
            "max_attempts": args.max_attempts,
            "policy": args.policy_param,
            "job_ids": self.ids[start:stop],
            "datas": (b"[" + b",".join(payloads[start:stop]) + b"]").decode("utf-8"),
        }


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


def insert_dependent(
    queries: Queries, params: Mapping[str, Any], job_ids: list[uuid.UUID], datas: list[bytes]
) -> Steps[str]:
    """Insert jobs that share dependencies (``params["depends_on"]``, non-empty), in the
    caller's transaction: ``lock_dependencies`` (the dependencies locked until commit), then
    ``insert_dependent_jobs`` per :data:`BULK_BATCH` jobs.

    Args:
        queries: The schema's queries.
        params: ``insert_job``'s parameters (the shared ones; ``job_id``/``data`` unused)
            plus ``depends_on`` and ``run_on_failure``.
        job_ids: The jobs' ids.
        datas: Their payloads as JSON text (UTF-8).

    Returns:
        What the jobs were written as (all alike): ``"waiting"``, ``"cancelled"`` (a
        dependency already failed) or ``"ready"`` (queued, or pending until ``run_at``).

    Raises:
        DependencyError: an unknown dependency (or another tenant's), or a recurring
            schedule's tracker; nothing was written (the caller rolls back).
    """
    depends_on = list(params["depends_on"])
    row = yield queries.lock_dependencies, {"tenant": params["tenant"], "depends_on": depends_on}
    assert row is not None
    found, schedules, live, failed_id, failed_status = row
    missing = set(depends_on) - set(found)
    if missing:
        shown = ", ".join(sorted(str(m) for m in missing)[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DependencyError(f"depends_on names jobs this tenant does not have: {shown}{more}")
    if schedules:
        raise DependencyError("depends_on names a recurring schedule; jobs depend on jobs")
    cancel_reason = None
    if failed_id is not None and not params["run_on_failure"]:
        cancel_reason = f"dependency {failed_id} {failed_status}"
    shared = {
        **params,
        "depends_on": depends_on,
        "waiting": live > 0,
        "cancel_reason": cancel_reason,
        # external_id: the job id (PostgreSQL), the workflow id (Temporal: job-<name>-<id>)
        "external_prefix": params.get("external_prefix", ""),
    }
    for start in range(0, len(job_ids), BULK_BATCH):
        chunk = datas[start : start + BULK_BATCH]
        yield (
            queries.insert_dependent_jobs,
            {
                **shared,
                "job_ids": job_ids[start : start + BULK_BATCH],
                "datas": (b"[" + b",".join(chunk) + b"]").decode("utf-8"),
            },
        )
    return "cancelled" if cancel_reason is not None else "waiting" if live > 0 else "ready"


def insert_one_dependent(queries: Queries, params: Mapping[str, Any]) -> Steps[ScheduledJob]:
    """:func:`insert_dependent` for one job (``insert_job`` parameters, with ``data_json``:
    the payload's JSON, UTF-8)."""
    yield from insert_dependent(queries, params, [params["job_id"]], [params["data_json"]])
    return handle(params["job_id"], params["tenant"], created=True)


def insert_many(queries: Queries, jobs: BulkJobs, encoding: str) -> Steps[list[ScheduledJob]]:
    """Insert a batch: ``bulk_enqueue_start``, then one binary COPY of every job.

    Args:
        queries: The schema's queries.
        jobs: The batch.
        encoding: The connection's client encoding (Python codec name). COPY data is UTF-8;
            on any other encoding the jobs go through ``insert_jobs_json`` statements, whose
            parameters psycopg encodes.
    """
    if jobs.args.depends_on:
        yield from insert_dependent(queries, jobs.dependent_params(), jobs.ids, jobs.payloads())
        return jobs.handles()
    if encoding != "utf-8":
        payloads = jobs.payloads()  # before anything is sent
    row = yield queries.bulk_enqueue_start, jobs.start_params()
    if encoding == "utf-8" and row is not None:
        yield CopyIn(queries.copy_jobs_live, jobs.copy_chunks(row[0]))
    else:
        for start in range(0, len(jobs), BULK_BATCH):
            yield queries.insert_jobs_json, jobs.json_params(payloads, start, start + BULK_BATCH)
    return jobs.handles()


# -- running them ------------------------------------------------------------------------------
def _has_rows(cur: psycopg.AsyncCursor[Any] | psycopg.Cursor[Any]) -> bool:
    """Whether the statement just run returned rows (``cur.description`` builds a column
    object per column on every call: 10 us of a single enqueue, docs/performance.md)."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


async def run_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T]) -> T:
    """Run ``steps`` on an async connection (in its current transaction, if any)."""
    # Tuple rows whatever row factory the connection uses.
    cur = (
        conn.steps_cursor()
        if isinstance(conn, PoolConnection)
        else conn.cursor(row_factory=tuple_row)
    )
    try:
        step = next(steps)
        while True:
            row: tuple[Any, ...] | None = None
            if isinstance(step, CopyIn):
                async with cur.copy(step.statement) as copy:
                    for chunk in step.chunks:
                        await copy.write(chunk)
            else:
                await cur.execute(*step)
                row = await cur.fetchone() if _has_rows(cur) else None
            step = steps.send(row)
    except StopIteration as done:
        result: T = done.value
        return result


def run_sync(conn: psycopg.Connection[Any], steps: Steps[T]) -> T:
    """Run ``steps`` on a sync connection (in its current transaction, if any)."""
    cur = conn.cursor(row_factory=tuple_row)
    try:
        step = next(steps)
        while True:
            row: tuple[Any, ...] | None = None
            if isinstance(step, CopyIn):
                with cur.copy(step.statement) as copy:
                    for chunk in step.chunks:
                        copy.write(chunk)
            else:
                cur.execute(*step)
                row = cur.fetchone() if _has_rows(cur) else None
            step = steps.send(row)
    except StopIteration as done:
        result: T = done.value
        return result


# -- on the caller's connection ----------------------------------------------------------------
async def enqueue_on(conn: Any, queries: Queries, params: Mapping[str, Any]) -> ScheduledJob:
    """Write one job in the caller's async transaction, inside a savepoint."""
    caller = async_connection(conn)
    if params.get("depends_on"):
        with translate_errors():
            async with caller_savepoint(caller, queries):
                return await run_async(caller, insert_one_dependent(queries, params))
    while True:
        with translate_errors():
            async with caller_savepoint(caller, queries):
                written = await run_async(caller, insert_one(queries, params))
        if written is not None:
            return written


def enqueue_on_sync(conn: Any, queries: Queries, params: Mapping[str, Any]) -> ScheduledJob:
    """:func:`enqueue_on` on the caller's sync connection."""
    caller = sync_connection(conn)
    if params.get("depends_on"):
        with translate_errors(), caller_savepoint_sync(caller, queries):
            return run_sync(caller, insert_one_dependent(queries, params))
    while True:
        with translate_errors(), caller_savepoint_sync(caller, queries):
            written = run_sync(caller, insert_one(queries, params))
        if written is not None:
            return written


async def enqueue_many_on(conn: Any, queries: Queries, jobs: BulkJobs) -> list[ScheduledJob]:
    """Write a batch in the caller's async transaction, inside a savepoint."""
    caller = async_connection(conn)
    with translate_errors():
        async with caller_savepoint(caller, queries):
            return await run_async(caller, insert_many(queries, jobs, caller.info.encoding))


def enqueue_many_on_sync(conn: Any, queries: Queries, jobs: BulkJobs) -> list[ScheduledJob]:
    """:func:`enqueue_many_on` on the caller's sync connection."""
    caller = sync_connection(conn)
    with translate_errors(), caller_savepoint_sync(caller, queries):
        return run_sync(caller, insert_many(queries, jobs, caller.info.encoding))


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
