"""Reads and writes of the shared ``jobs`` / ``job_details`` tables, common to every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from jobrunner._context import DurableStart, JobContext
from jobrunner._db._database import Database
from jobrunner._db._errors import retry_conflicts
from jobrunner._models import JobError, JobInfo, JobStatus, StepInfo
from jobrunner._validation import as_json_text


def utc(value: datetime | None) -> datetime | None:
    """Columns of type TIMESTAMP hold UTC; give them a timezone."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def row_to_info(row: dict[str, Any]) -> JobInfo:
    """Map a ``get_job`` row to :class:`JobInfo`."""
    return JobInfo(
        job_id=row["job_id"],
        tenant=row["tenant"],
        name=row["type"],
        status=JobStatus(row["status"]),
        progress=int(row["progress"] or 0),
        progress_message=row.get("progress_message"),
        result=row.get("result"),
        error=JobError.from_json(row.get("error")),
        attempts=int(row.get("attempts") or 0),
        max_attempts=int(row.get("max_attempts") or 0),
        metadata=dict(row.get("metadata") or {}),
        runner_type=row["runner_type"],
        queue=row.get("queue") or "default",
        priority=int(row.get("priority") or 0),
        created_at=utc(row.get("created_at")),
        started_at=row.get("started_at"),
        completed_at=row.get("completed_at"),
        run_at=row.get("run_at"),
        external_id=row.get("external_id"),
        external_run_id=row.get("external_run_id"),
        user_id=row.get("user_id"),
        singleton_key=row.get("singleton_key"),
        schedule_id=row.get("schedule_id"),
    )


def row_to_step(row: dict[str, Any]) -> StepInfo:
    """Map a ``job_details`` row to :class:`StepInfo`."""
    return StepInfo(
        detail_id=row["detail_id"],
        step_name=row["step_name"],
        status=JobStatus(row["status"]),
        result=row.get("result"),
        processed_at=utc(row.get("processed_at")),
        retry_count=int(row.get("retry_count") or 0),
        metadata=dict(row.get("metadata") or {}),
    )


def json_param(value: Any) -> Jsonb | None:
    """A JSONB parameter (validated); ``None`` stays SQL NULL."""
    if value is None:
        return None
    as_json_text(value, "value")
    return Jsonb(value)


class JobStore:
    """Shared table operations; also the :class:`~jobrunner._context.JobSink` of handlers."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = db.queries

    async def get_job(self, tenant: uuid.UUID, job_id: uuid.UUID) -> JobInfo | None:
        """The job row of ``tenant``, or ``None``."""
        async with self.db.connection() as conn:
            cur = await conn.execute(self.q.get_job, {"tenant": tenant, "job_id": job_id})
            row = await cur.fetchone()
        return None if row is None else row_to_info(row)

    async def list_steps(self, tenant: uuid.UUID, job_id: uuid.UUID) -> list[StepInfo]:
        """Every ``job_details`` row of a job in time order."""
        async with self.db.connection() as conn:
            cur = await conn.execute(self.q.list_details, {"tenant": tenant, "job_id": job_id})
            return [row_to_step(r) for r in await cur.fetchall()]

    async def insert_detail(
        self,
        tenant: uuid.UUID,
        job_id: uuid.UUID,
        step_name: str,
        status: JobStatus,
        *,
        result: Any = None,
        retry_count: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> uuid.UUID:
        """Append a ``job_details`` row."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.q.insert_detail,
                {
                    "tenant": tenant,
                    "job_id": job_id,
                    "step_name": step_name,
                    "status": status.value,
                    "result": json_param(result),
                    "retry_count": retry_count,
                    "metadata": json_param(metadata or {}),
                },
            )
            row = await cur.fetchone()
        assert row is not None
        return uuid.UUID(str(row["detail_id"]))

    async def _fetch_one(self, query: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        """One fenced write of an attempt, run again when it lost a race with a statement that
        moved the job's row between partitions (then it sees the attempt is over)."""

        async def run() -> dict[str, Any] | None:
            async with self.db.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchone() if cur.description is not None else None

        return await retry_conflicts(run)

    # -- JobSink ----------------------------------------------------------------------------
    async def dependency_results(self, ctx: JobContext) -> dict[uuid.UUID, Any]:
        """``{job_id: result}`` of the job's dependencies (``None`` for one that did not
        complete); one query."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                self.db.queries.dependency_results, {"tenant": ctx.tenant, "job_id": ctx.job_id}
            )
            rows = await cur.fetchall()
        return {
            row["job_id"]: row["result"] if row["status"] == JobStatus.COMPLETED.value else None
            for row in rows
        }

    async def save_progress(self, ctx: JobContext, progress: int, message: str | None) -> None:
        """Persist progress; ignored once the attempt lost its lease."""
        params = {
            "tenant": ctx.tenant,
            "job_id": ctx.job_id,
            "token": ctx.lease_token,
            "progress": progress,
            "message": message,
        }

        async def save() -> None:
            async with self.db.connection() as conn:
                await conn.execute(self.q.save_progress, params)

        # A cancel or lease rescue that moves the row meanwhile: run again, it matches nothing.
        await retry_conflicts(save)

    async def start_step(self, ctx: JobContext, name: str) -> uuid.UUID:
        """Insert a ``processing`` step row for the attempt.

        Fenced by the attempt's lease token and ``status = 'processing'``: once the attempt is
        over (timed out and recorded, cancelled, its lease rescued) nothing is written, ``ctx``
        is marked cancelled and the id returned matches no row.
        """
        row = await self._fetch_one(
            self.q.start_step,
            {
                "tenant": ctx.tenant,
                "job_id": ctx.job_id,
                "token": ctx.lease_token,
                "step_name": name,
                "attempt": ctx.attempt,
            },
        )
        if row is None:
            ctx.mark_cancelled()
            return uuid.uuid4()
        return uuid.UUID(str(row["detail_id"]))

    async def finish_step(
        self, ctx: JobContext, detail_id: uuid.UUID, *, ok: bool, result: Any, error: Any
    ) -> None:
        """Mark a step row completed or failed; fenced like :meth:`start_step` (a no-op once
        the attempt is over)."""
        payload = result if ok else error
        try:
            param = json_param(payload)
        except Exception:  # noqa: BLE001 - a step result that is not JSON is stored as text
            param = Jsonb({"repr": repr(payload)[:2000]})
        await self._fetch_one(
            self.q.finish_step,
            {
                "tenant": ctx.tenant,
                "job_id": ctx.job_id,
                "token": ctx.lease_token,
                "detail_id": detail_id,
                "status": (JobStatus.COMPLETED if ok else JobStatus.FAILED).value,
                "result": param,
            },
        )

    async def begin_durable_step(self, ctx: JobContext, name: str) -> DurableStart:
        """The job's stored result of durable step ``name``, or a new ``processing`` row for
        it; fenced like :meth:`start_step` (``fenced``: nothing read or written)."""
        row = await self._fetch_one(
            self.q.begin_durable_step,
            {
                "tenant": ctx.tenant,
                "job_id": ctx.job_id,
                "token": ctx.lease_token,
                "step_name": name,
                "attempt": ctx.attempt,
            },
        )
        assert row is not None
        if not row["holds"]:
            ctx.mark_cancelled()
            return DurableStart("fenced")
        if row["stored"]:
            return DurableStart("stored", result=row["result"])
        return DurableStart("started", detail_id=uuid.UUID(str(row["detail_id"])))

    async def complete_durable_step(
        self, ctx: JobContext, detail_id: uuid.UUID, result_json: str | None, *, tries: int
    ) -> bool:
        """Store a durable step's result (committed on return); ``False`` when fenced."""
        row = await self._fetch_one(
            self.q.complete_durable_step,
            {
                "tenant": ctx.tenant,
                "job_id": ctx.job_id,
                "token": ctx.lease_token,
                "detail_id": detail_id,
                "result": result_json,
                "tries": tries,
            },
        )
        return row is not None
