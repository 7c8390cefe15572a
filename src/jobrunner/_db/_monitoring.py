"""Monitoring reads and history maintenance over the shared ``jobs`` / ``job_details`` tables.

Every backend calls these functions (the PostgreSQL runner directly, the Temporal runner for
the rows it writes), so the dashboard, the CLI and the Python API see the same figures.

Query shape rules kept here:

* one statement per call (metrics, a page of jobs) or two for a job's details (the job, then
  its steps): no query per row;
* a tenant-scoped view and the ``ALL_TENANTS`` admin view are different SQL texts (the tenant
  clause is present or absent), so each gets a plan on its own index instead of a generic plan
  with ``tenant = $1 OR $2``;
* user input only ever reaches SQL as bound parameters; the fragments spliced into the named
  queries come from constants in this module.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from jobrunner._db._database import Database
from jobrunner._db._errors import retry_conflicts
from jobrunner._db._queries import fragment
from jobrunner._db._store import JobStore, row_to_info, utc
from jobrunner._errors import InvalidArgumentError, JobNotFoundError
from jobrunner._filters import list_filters, tenant_scope
from jobrunner._limits import MAX_LIST_LIMIT
from jobrunner._models import (
    LIVE_STATUSES,
    RELATIONS_SHOWN,
    JobDetails,
    JobInfo,
    JobPage,
    JobStatus,
    Metrics,
    RelatedJob,
)
from jobrunner._runner import AllTenants, HistoryScope, TenantArg, wait_arguments, wait_within
from jobrunner._validation import (
    as_history_age,
    as_optional_text,
    as_tenant,
    as_uuid,
)

__all__ = [
    "CLEAR_SCOPES",
    "MAX_LIST_LIMIT",
    "DatabaseMonitoring",
    "clear_history",
    "decode_cursor",
    "encode_cursor",
    "get_job_details",
    "get_metrics",
    "list_filters",
    "list_jobs",
    "retry_job",
]

CLEAR_BATCH: Final = 5000
THROUGHPUT_MINUTES: Final = 60

#: Statuses each ``clear_history`` scope removes. Live jobs (pending, queued, processing,
#: retrying) and ``active`` schedule tracker rows are in neither, by construction.
CLEAR_SCOPES: Final[dict[str, tuple[str, ...]]] = {
    "finished": ("completed",),
    "all": ("completed", "failed", "cancelled"),
}


def _with_tenant(query: str, tenant: uuid.UUID | None) -> str:
    return query.replace("/*tenant*/", fragment("filter_tenant") if tenant is not None else "")


def _naive_utc(value: datetime) -> datetime:
    """``jobs.created_at`` is a UTC ``TIMESTAMP`` without zone: compare in naive UTC."""
    return value.astimezone(UTC).replace(tzinfo=None)


# -- details ------------------------------------------------------------------------------------
async def get_job_details(db: Database, tenant: uuid.UUID, job_id: uuid.UUID) -> JobDetails | None:
    """The job with data and every ``job_details`` row (two queries, whatever the step count)."""
    store = JobStore(db)
    async with db.connection() as conn:
        cur = await conn.execute(db.queries.get_job, {"tenant": tenant, "job_id": job_id})
        row = await cur.fetchone()
        if row is None:
            return None
        cur = await conn.execute(db.queries.get_job_data, {"tenant": tenant, "job_id": job_id})
        data_row = await cur.fetchone()
        cur = await conn.execute(
            db.queries.job_relations,
            {"tenant": tenant, "job_id": job_id, "limit": RELATIONS_SHOWN},
        )
        relations = await cur.fetchall()
    steps = await store.list_steps(tenant, job_id)
    related: dict[str, list[RelatedJob]] = {"dependency": [], "dependent": [], "child": []}
    for rel in relations:
        related[rel["relation"]].append(
            RelatedJob(rel["job_id"], rel["type"], JobStatus(rel["status"]))
        )
    return JobDetails(
        job=row_to_info(row),
        data=dict((data_row or {}).get("data") or {}),
        steps=steps,
        dependencies=related["dependency"],
        dependents=related["dependent"],
        children=related["child"],
        parent_job_id=(data_row or {}).get("parent_job_id"),
    )


# -- retry --------------------------------------------------------------------------------------
async def retry_job(
    db: Database,
    tenant: uuid.UUID,
    job_id: uuid.UUID,
    *,
    runner_type: str,
    requested_by: str | None = None,
) -> bool:
    """Queue a failed or cancelled job of ``runner_type`` again and wake a worker.

    Attempts start over, ``run_at`` is now, and the previous error is kept in a ``retry``
    ``job_details`` row. Rows of another backend are left alone (that backend restarts its own
    jobs). Returns ``False`` when the tenant has no such job, it is not failed or cancelled, or
    another live job holds its singleton key.
    """
    if not isinstance(runner_type, str) or not runner_type:
        raise InvalidArgumentError("runner_type must be a non-empty string")
    requested_by = as_optional_text(requested_by, "requested_by")
    params = {
        "tenant": tenant,
        "job_id": job_id,
        "runner_type": runner_type,
        "requested_by": requested_by,
        "channel": db.channel_jobs,
    }

    async def retry() -> dict[str, Any] | None:
        async with db.transaction() as conn:
            cur = await conn.execute(db.queries.monitoring_retry_job, params)
            return await cur.fetchone()

    return await retry_conflicts(retry) is not None


# -- list ---------------------------------------------------------------------------------------
# The stamp of a cursor whose row's created_at lies outside Python's range: such a value loads
# clamped to datetime.min/max (_db/_loaders), so the next page starts after the row's own
# stored value, looked up by its id ('-infinity'/'infinity' if the row is gone by then).
_EDGE_STAMPS: Final = {datetime.min: "-infinity", datetime.max: "infinity"}


def encode_cursor(created_at: datetime | None, job_id: uuid.UUID) -> str:
    """An opaque keyset cursor for the row after which the next page starts."""
    stamp = None
    if created_at is not None:
        naive = _naive_utc(created_at)
        stamp = _EDGE_STAMPS.get(naive) or naive.isoformat()
    raw = json.dumps([stamp, str(job_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | str | None, uuid.UUID]:
    """Inverse of :func:`encode_cursor`; anything else is an :class:`InvalidArgumentError`.

    The stamp is a naive UTC datetime, ``None`` (a row without ``created_at``) or
    ``"-infinity"`` / ``"infinity"`` (a row whose ``created_at`` Python cannot hold).
    """
    if not isinstance(cursor, str) or not cursor or len(cursor) > 200:
        raise InvalidArgumentError("cursor is malformed")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, key = json.loads(raw)
        job_id = uuid.UUID(key)
        if stamp in _EDGE_STAMPS.values():
            return stamp, job_id
        created = None if stamp is None else datetime.fromisoformat(stamp)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidArgumentError("cursor is malformed") from None
    if created is not None and created.tzinfo is not None:
        raise InvalidArgumentError("cursor is malformed")
    return created, job_id


def escape_like(text: str) -> str:
    """Escape ``\\``, ``%`` and ``_`` so user text matches literally in ``ILIKE ... ESCAPE``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_jobs(
    db: Database,
    *,
    tenant: object = None,
    status: object = None,
    name: object = None,
    runner_type: object = None,
    created_after: object = None,
    created_before: object = None,
    search: object = None,
    limit: object = 50,
    cursor: object = None,
) -> JobPage:
    """Jobs newest first (``created_at``, then ``job_id``), one statement per page.

    Raises:
        InvalidArgumentError: a filter, the limit or the cursor is malformed.
    """
    f = list_filters(
        tenant=tenant,
        status=status,
        name=name,
        runner_type=runner_type,
        created_after=created_after,
        created_before=created_before,
        search=search,
        limit=limit,
    )
    position = None if cursor is None else decode_cursor(cursor)  # type: ignore[arg-type]

    q = db.queries
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": f.limit + 1}
    if f.tenant is not None:
        clauses.append(q.filter_tenant)
        params["tenant"] = f.tenant
    if f.statuses is not None:
        clauses.append(q.filter_statuses)
        params["statuses"] = f.statuses
    if f.name is not None:
        clauses.append(q.filter_name)
        params["name"] = f.name
    if f.runner_type is not None:
        clauses.append(q.filter_runner_type)
        params["runner_type"] = f.runner_type
    if f.created_after is not None:
        clauses.append(q.filter_created_after)
        params["created_after"] = _naive_utc(f.created_after)
    if f.created_before is not None:
        clauses.append(q.filter_created_before)
        params["created_before"] = _naive_utc(f.created_before)
    if f.search is not None:
        clauses.append(q.filter_search)
        params["pattern"] = f"%{escape_like(f.search)}%"
    if position is not None:
        created, last_id = position
        params["cursor_id"] = last_id
        if created is None:
            clauses.append(q.filter_after_null_created)
        elif isinstance(created, str):
            scoped = f.tenant is not None
            clauses.append(q.filter_after_edge_row_of_tenant if scoped else q.filter_after_edge_row)
            params["cursor_edge"] = created
        else:
            # created_at has a default and every writer sets it, so rows without one are not
            # paged into here.
            clauses.append(q.filter_after_row)
            params["cursor_at"] = created
    query = db.queries.monitoring_list_jobs.replace("/*filters*/", " ".join(clauses))
    async with db.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        rows = await cur.fetchall()
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    jobs = [row_to_info(r) for r in rows]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(utc(last["created_at"]), last["job_id"])
    return JobPage(jobs=jobs, next_cursor=next_cursor)


# -- metrics ------------------------------------------------------------------------------------
async def get_metrics(db: Database, *, tenant: object) -> Metrics:
    """Counts by status and runner type, failures of the last 24 h, throughput, queue age.

    One statement; see ``monitoring_metrics`` in ``monitoring.sql`` and the indexes of
    migration 0003.
    """
    scope = tenant_scope(tenant)
    query = _with_tenant(db.queries.monitoring_metrics, scope)
    params: dict[str, Any] = {} if scope is None else {"tenant": scope}
    async with db.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        row = await cur.fetchone()
    assert row is not None
    by_status = {s.value: 0 for s in JobStatus}
    by_runner: dict[str, int] = {}
    for status_name, runner, count in row["counts"]:
        by_status[status_name] = by_status.get(status_name, 0) + int(count)
        by_runner[runner] = by_runner.get(runner, 0) + int(count)
    completed = by_status[JobStatus.COMPLETED.value]
    failed = by_status[JobStatus.FAILED.value]
    rate = None if completed + failed == 0 else completed / (completed + failed)
    now_minute = int(row["now_minute"])
    first = now_minute - 60 * (THROUGHPUT_MINUTES - 1)
    completions = dict.fromkeys(range(first, now_minute + 1, 60), 0)
    failures = dict(completions)
    for minute, status_name, count in row["per_minute"]:
        target = completions if status_name == "completed" else failures
        if int(minute) in target:
            target[int(minute)] += int(count)
    oldest = row["oldest_waiting_seconds"]
    return Metrics(
        by_status=by_status,
        total=sum(by_status.values()),
        failed_last_24h=int(row["failed_24h"]),
        success_rate=rate,
        by_runner_type=dict(sorted(by_runner.items())),
        throughput_per_minute=[(stamp(m), n) for m, n in completions.items()],
        oldest_queued_age_seconds=None if oldest is None else max(float(oldest), 0.0),
        extra={
            "failed_per_minute": [(stamp(m), n) for m, n in failures.items()],
            "running": by_status[JobStatus.PROCESSING.value],
            "live": sum(by_status[s.value] for s in LIVE_STATUSES),
        },
    )


def stamp(epoch: int) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(epoch, UTC)


# -- history ------------------------------------------------------------------------------------
async def clear_history(
    db: Database, *, tenant: object, scope: object, older_than: timedelta | float | None
) -> int:
    """Delete history rows in batches; returns how many jobs were removed.

    ``scope="finished"`` removes completed jobs; ``scope="all"`` every non-live job (completed,
    failed, cancelled). Live jobs and ``active`` schedule tracker rows are never removed. With
    ``older_than`` only jobs that finished at least that long ago go. ``job_details`` rows go
    with their job (``ON DELETE CASCADE``).

    Raises:
        InvalidArgumentError: unknown scope, or ``older_than`` is not a non-negative duration.
    """
    if not isinstance(scope, str) or scope not in CLEAR_SCOPES:
        raise InvalidArgumentError(f"scope must be one of {', '.join(CLEAR_SCOPES)}")
    scoped = tenant_scope(tenant)
    seconds = as_history_age(older_than)
    statuses = ", ".join(f"'{s}'" for s in CLEAR_SCOPES[scope])  # constants above, not input
    query = _with_tenant(db.queries.monitoring_clear_batch, scoped)
    query = query.replace("/*statuses*/", statuses)
    age = db.queries.filter_finished_before if seconds is not None else ""
    query = query.replace("/*age*/", age)
    params: dict[str, Any] = {"batch": CLEAR_BATCH}
    if scoped is not None:
        params["tenant"] = scoped
    if seconds is not None:
        try:
            cutoff = datetime.now(UTC) - timedelta(seconds=seconds)
        except OverflowError:
            raise InvalidArgumentError("older_than is too large") from None
        params["cutoff"] = cutoff
        params["cutoff_utc"] = _naive_utc(cutoff)
    removed = 0
    encoded = query.encode()
    while True:
        # One short transaction per batch: no long lock on a big history.
        async with db.connection() as conn:
            cur = await conn.execute(encoded, params)
            count = cur.rowcount
        removed += max(count, 0)
        if count < CLEAR_BATCH:
            return removed


class DatabaseMonitoring:
    """The ``JobRunner`` monitoring methods for a runner whose jobs live in ``self.db``.

    Mixed in (before :class:`JobRunner`) by every database-backed runner, so each reads the
    shared tables through the functions above and none repeats the delegation.
    """

    if TYPE_CHECKING:
        db: Database

        async def _ensure_started(self) -> None: ...

        async def get_job_status(
            self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
        ) -> JobInfo | None: ...

    async def wait_for_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        timeout: float | timedelta | None = None,
        poll_interval: float = 0.05,
    ) -> JobInfo:
        """Wait until the job is final and return it, woken by the database.

        Every change of a job to a final status notifies ``<schema>_done`` (migration 0008,
        whichever backend wrote it); one LISTEN connection per process serves every waiter,
        and a waiter re-reads its job only when its job is announced. ``poll_interval`` only
        applies while that connection cannot be opened (then waiters poll); otherwise the job
        is re-read at most every 30 s as a safety net.

        Raises:
            JobTimeoutError: ``timeout`` seconds passed first (also a ``TimeoutError``).
            JobNotFoundError: no such job for the tenant.
            InvalidArgumentError: an argument is malformed.
        """
        key, tenant_id, seconds, longest = wait_arguments(job_id, tenant, timeout, poll_interval)

        async def read() -> JobInfo:
            info = await self.get_job_status(key, tenant=tenant_id)
            if info is None:
                raise JobNotFoundError(f"job {key} not found")
            return info

        async def wait() -> JobInfo:
            await self._ensure_started()
            return await self.db.waiters.wait(key, read, longest)

        return await wait_within(wait(), key, seconds)

    async def get_job_details(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobDetails | None:
        """The job with data, attempts, steps and errors."""
        await self._ensure_started()
        return await get_job_details(self.db, as_tenant(tenant), as_uuid(job_id, "job_id"))

    async def list_jobs(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        status: JobStatus | str | Sequence[JobStatus | str] | None = None,
        name: str | None = None,
        runner_type: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first with keyset pagination (every backend's rows)."""
        await self._ensure_started()
        return await list_jobs(
            self.db,
            tenant=tenant,
            status=status,
            name=name,
            runner_type=runner_type,
            created_after=created_after,
            created_before=created_before,
            search=search,
            limit=limit,
            cursor=cursor,
        )

    async def get_metrics(self, *, tenant: TenantArg | AllTenants = None) -> Metrics:
        """Counts, rates, throughput and queue age."""
        await self._ensure_started()
        return await get_metrics(self.db, tenant=tenant)

    async def clear_history(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        scope: HistoryScope = "finished",
        older_than: timedelta | float | None = None,
    ) -> int:
        """Delete finished jobs (never a live job or a live schedule)."""
        await self._ensure_started()
        return await clear_history(self.db, tenant=tenant, scope=scope, older_than=older_than)
