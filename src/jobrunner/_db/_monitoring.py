"""Monitoring reads and history maintenance over the shared tables (owned by the monitoring work)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from jobrunner._db._database import Database
from jobrunner._db._store import JobStore
from jobrunner._models import JobDetails, JobPage, JobStatus, Metrics


async def get_job_details(db: Database, tenant: uuid.UUID, job_id: uuid.UUID) -> JobDetails | None:
    """The job with data and every ``job_details`` row."""
    store = JobStore(db)
    info = await store.get_job(tenant, job_id)
    if info is None:
        return None
    async with db.connection() as conn:
        cur = await conn.execute(db.queries.get_job_data, {"tenant": tenant, "job_id": job_id})
        row = await cur.fetchone()
    steps = await store.list_steps(tenant, job_id)
    return JobDetails(job=info, data=dict((row or {}).get("data") or {}), steps=steps)


async def retry_job(db: Database, tenant: uuid.UUID, job_id: uuid.UUID, *, runner_type: str) -> bool:
    raise NotImplementedError


async def list_jobs(db: Database, **filters: Any) -> JobPage:
    raise NotImplementedError


async def get_metrics(db: Database, *, tenant: Any) -> Metrics:
    raise NotImplementedError


async def clear_history(
    db: Database, *, tenant: Any, scope: str, older_than: timedelta | float | None
) -> int:
    raise NotImplementedError


_unused: tuple[Any, ...] = (Sequence, datetime, JobStatus)
