"""``list_jobs`` filters, checked in one place for every backend.

The PostgreSQL and Temporal runners (through :mod:`jobrunner._db._monitoring`) and the
in-memory runner call :func:`list_filters`, so each refuses the same input with the same
:class:`~jobrunner.InvalidArgumentError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from jobrunner._errors import InvalidArgumentError
from jobrunner._limits import MAX_LIST_LIMIT, MAX_SEARCH_LENGTH
from jobrunner._models import JobStatus
from jobrunner._runner import AllTenants
from jobrunner._validation import as_aware_datetime, as_tenant, as_text

__all__ = ["ListFilters", "list_filters", "tenant_scope"]


def tenant_scope(tenant: object) -> uuid.UUID | None:
    """``None`` for the explicit admin view, else the validated tenant."""
    if isinstance(tenant, AllTenants):
        return None
    return as_tenant(tenant)


def _statuses(status: object) -> list[str] | None:
    if status is None:
        return None
    items: Sequence[object]
    if isinstance(status, JobStatus | str):
        items = [status]
    elif isinstance(status, Sequence | set | frozenset):
        items = list(status)
    else:
        raise InvalidArgumentError("status must be a JobStatus, a string or a sequence of them")
    if not items:
        raise InvalidArgumentError("status must name at least one status")
    out: list[str] = []
    for item in items:
        try:
            value = JobStatus(item).value
        except ValueError:
            allowed = ", ".join(s.value for s in JobStatus)
            raise InvalidArgumentError(
                f"unknown status {item!r:.40}; expected one of {allowed}"
            ) from None
        if value not in out:
            out.append(value)
    return out


def _short_text(value: object, what: str, *, limit: int = 200) -> str | None:
    if value is None:
        return None
    return as_text(value, what, max_length=limit, allow_empty=False)


def _bound(value: object, what: str) -> datetime | None:
    return None if value is None else as_aware_datetime(value, what)


@dataclass(frozen=True, slots=True)
class ListFilters:
    """Validated ``list_jobs`` filters (``tenant`` is ``None`` for ``ALL_TENANTS``)."""

    tenant: uuid.UUID | None
    statuses: list[str] | None
    name: str | None
    runner_type: str | None
    created_after: datetime | None
    created_before: datetime | None
    search: str | None
    limit: int


def list_filters(
    *,
    tenant: object,
    status: object,
    name: object,
    runner_type: object,
    created_after: object,
    created_before: object,
    search: object,
    limit: object,
) -> ListFilters:
    """Check ``list_jobs`` filters; every backend calls this so each refuses the same input.

    Raises:
        InvalidArgumentError: a filter or the limit is malformed.
    """
    scope = tenant_scope(tenant)
    statuses = _statuses(status)
    name_v = _short_text(name, "name")
    runner_v = _short_text(runner_type, "runner_type", limit=50)
    after = _bound(created_after, "created_after")
    before = _bound(created_before, "created_before")
    search_v = _short_text(search, "search", limit=MAX_SEARCH_LENGTH)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgumentError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    return ListFilters(scope, statuses, name_v, runner_v, after, before, search_v, limit)
