"""assert_enqueued / assert_not_enqueued: did the code under test schedule a job?"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from jobrunner._db._queries import queries_for
from jobrunner._errors import InvalidArgumentError
from jobrunner._models import JobStatus
from jobrunner._runner import ALL_TENANTS, AllTenants, TenantArg
from jobrunner._validation import as_tenant
from jobrunner.testing._memory import InMemoryJobRunner

__all__ = ["EnqueuedJob", "assert_enqueued", "assert_not_enqueued", "enqueued_jobs"]

_ANY_DATA: Any = object()


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """A job as the assertions see it."""

    job_id: uuid.UUID
    tenant: uuid.UUID
    name: str
    data: dict[str, Any]
    status: JobStatus
    metadata: dict[str, Any]


def enqueued_jobs(
    runner: Any,
    name: str | None = None,
    *,
    tenant: TenantArg | AllTenants = None,
    status: JobStatus | str | Iterable[JobStatus | str] | None = None,
) -> list[EnqueuedJob]:
    """Jobs the runner holds (oldest first), optionally of one name, tenant and status.

    Recurring schedules' tracker rows are left out. Works with an :class:`InMemoryJobRunner`,
    a PostgreSQL (or Temporal) runner, and a :class:`~jobrunner.SyncJobRunner` around either.
    On a database it reads the ``jobs`` table with a short-lived connection of its own.
    """
    statuses = _statuses(status)
    inner = getattr(runner, "runner", runner)  # SyncJobRunner wraps the async runner
    if isinstance(inner, InMemoryJobRunner):
        found = []
        for job in sorted(inner._jobs.values(), key=lambda j: j.seq):
            if job.tracker:
                continue
            if tenant is not ALL_TENANTS and job.tenant != as_tenant(tenant):
                continue
            if name is not None and job.name != name:
                continue
            if statuses is not None and job.status not in statuses:
                continue
            found.append(
                EnqueuedJob(
                    job.job_id,
                    job.tenant,
                    job.name,
                    _roundtrip(job.data),
                    job.status,
                    _roundtrip(job.metadata),
                )
            )
        return found
    db = getattr(inner, "db", None)
    conninfo = getattr(db, "conninfo", None)
    schema = getattr(db, "schema", None)
    if not isinstance(conninfo, str) or not isinstance(schema, str):
        raise InvalidArgumentError(
            f"cannot inspect the jobs of {type(runner).__name__}: use an InMemoryJobRunner or a "
            "database-backed runner"
        )
    return _query(conninfo, schema, name, tenant, statuses)


def _query(
    conninfo: str,
    schema: str,
    name: str | None,
    tenant: TenantArg | AllTenants,
    statuses: frozenset[JobStatus] | None,
) -> list[EnqueuedJob]:
    params: dict[str, Any] = {
        "tenant": None if tenant is ALL_TENANTS else as_tenant(tenant),
        "name": name,
        "statuses": None if statuses is None else sorted(s.value for s in statuses),
    }
    query = queries_for(schema).testing_enqueued_jobs
    # A sync connection of its own, so this works from sync and async tests alike.
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute(query, params).fetchall()
    return [
        EnqueuedJob(
            r["job_id"],
            r["tenant"],
            r["type"],
            dict(r["data"] or {}),
            JobStatus(r["status"]),
            dict(r["metadata"] or {}),
        )
        for r in rows
    ]


def assert_enqueued(
    runner: Any,
    name: str,
    data: Mapping[str, Any] | None = _ANY_DATA,
    *,
    tenant: TenantArg | AllTenants = None,
    status: JobStatus | str | Iterable[JobStatus | str] | None = None,
    count: int | None = None,
) -> list[EnqueuedJob]:
    """Assert that ``runner`` holds a job ``name`` (with ``data``, when given) for ``tenant``.

    Jobs count whatever their status (queued, already run, failed...) unless ``status`` says
    otherwise. ``data`` must equal the job's payload; ``unittest.mock.ANY`` works inside it.

    Args:
        runner: The runner the code under test scheduled on.
        name: Job name.
        data: Expected payload; omit to accept any.
        tenant: Tenant to look in (default: the system tenant); ``ALL_TENANTS`` for every one.
        status: Only jobs in this status (or these statuses).
        count: Exactly this many matches (default: at least one).

    Returns:
        The matching jobs, oldest first.

    Raises:
        AssertionError: no match (or not ``count``); the message lists what is there.
    """
    jobs = enqueued_jobs(runner, name, tenant=tenant, status=status)
    matches = [j for j in jobs if data is _ANY_DATA or _data_equal(j.data, data)]
    ok = bool(matches) if count is None else len(matches) == count
    if not ok:
        wanted = f"{count} job(s)" if count is not None else "a job"
        what = "" if data is _ANY_DATA else f" with data {_show(data)}"
        raise AssertionError(
            f"expected {wanted} {name!r}{what}{_scope(tenant, status)}, found {len(matches)}.\n"
            f"{_inventory(runner, name, jobs, tenant)}"
        )
    return matches


def assert_not_enqueued(
    runner: Any,
    name: str,
    data: Mapping[str, Any] | None = _ANY_DATA,
    *,
    tenant: TenantArg | AllTenants = None,
    status: JobStatus | str | Iterable[JobStatus | str] | None = None,
) -> None:
    """Assert that ``runner`` holds no job ``name`` (with ``data``, when given) for ``tenant``.

    Raises:
        AssertionError: a match exists; the message shows it.
    """
    jobs = enqueued_jobs(runner, name, tenant=tenant, status=status)
    matches = [j for j in jobs if data is _ANY_DATA or _data_equal(j.data, data)]
    if matches:
        what = "" if data is _ANY_DATA else f" with data {_show(data)}"
        shown = "\n".join(
            f"  - {j.job_id} {j.status.value} data={_show(j.data)}" for j in matches[:10]
        )
        raise AssertionError(
            f"expected no job {name!r}{what}{_scope(tenant, status)}, found {len(matches)}:\n"
            f"{shown}"
        )


def _data_equal(actual: dict[str, Any], expected: Mapping[str, Any] | None) -> bool:
    if expected is None:
        expected = {}
    try:
        normal = _roundtrip(dict(expected))
    except (TypeError, ValueError):
        normal = dict(expected)  # holds mock.ANY or similar: compare as given
    return bool(normal == actual)


def _roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _scope(tenant: Any, status: Any) -> str:
    parts = []
    if tenant is ALL_TENANTS:
        parts.append(" in any tenant")
    elif tenant is not None:
        parts.append(f" for tenant {tenant}")
    if status is not None:
        parts.append(f" in status {status}")
    return "".join(parts)


def _inventory(runner: Any, name: str, same_name: list[EnqueuedJob], tenant: Any) -> str:
    if same_name:
        lines = [f"  - {j.job_id} {j.status.value} data={_show(j.data)}" for j in same_name[:10]]
        return f"jobs {name!r} there:\n" + "\n".join(lines)
    others = enqueued_jobs(runner, tenant=tenant)
    if not others:
        return "the runner holds no jobs for that tenant"
    names = sorted({j.name for j in others})
    return f"no job {name!r}; job names there: {', '.join(names)}"


def _statuses(
    status: JobStatus | str | Iterable[JobStatus | str] | None,
) -> frozenset[JobStatus] | None:
    if status is None:
        return None
    values = [status] if isinstance(status, JobStatus | str) else list(status)
    try:
        return frozenset(JobStatus(v) for v in values)
    except ValueError:
        raise InvalidArgumentError(f"unknown status in {status!r}") from None
