"""Monitoring API on PostgreSQL: metrics, list_jobs, details, retry, clear_history."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobrunner import ALL_TENANTS, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner._db import _monitoring
from jobrunner._errors import InvalidArgumentError
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

T1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
T2 = uuid.UUID("22222222-2222-2222-2222-222222222222")


@pytest.fixture
def handlers(registry: JobHandlerRegistry) -> JobHandlerRegistry:
    async def ok(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
        async with ctx.step("work") as step:
            step.result = {"echo": data.get("n")}
        return {"ok": True}

    async def boom(ctx: Any, data: dict[str, Any]) -> None:
        raise ValueError(f"boom {data.get('n')} 100%_done")

    registry.add("ok", ok)
    registry.add("boom", boom, retry=RetryPolicy(max_attempts=1))
    registry.add("idle", ok)  # scheduled but never run in some tests (no worker)
    return registry


async def _run_all(runner: PostgresJobRunner, ids: list[uuid.UUID], tenant: uuid.UUID) -> None:
    async with running_worker(runner, concurrency=4):
        for job_id in ids:
            await runner.wait_for_job(job_id, tenant=tenant, timeout=30)


async def _sql(runner: PostgresJobRunner, text: str, *params: Any) -> Any:
    query = sql.SQL(text).format(schema=sql.Identifier(runner.schema))
    async with runner.db.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else cur.rowcount


async def test_metrics_empty(runner: PostgresJobRunner, handlers: JobHandlerRegistry) -> None:
    m = await runner.get_metrics(tenant=T1)
    assert m.total == 0
    assert set(m.by_status) == {s.value for s in JobStatus}
    assert all(v == 0 for v in m.by_status.values())
    assert m.success_rate is None
    assert m.oldest_queued_age_seconds is None
    assert len(m.throughput_per_minute) == 60
    times = [t for t, _ in m.throughput_per_minute]
    assert times == sorted(times)
    assert all(t.tzinfo is not None for t in times)
    assert (times[-1] - times[0]) == timedelta(minutes=59)


async def test_metrics_counts_rates_and_tenants(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry
) -> None:
    oks = [(await runner.schedule_job("ok", {"n": i}, tenant=T1)).job_id for i in range(3)]
    bad = (await runner.schedule_job("boom", {"n": 1}, tenant=T1)).job_id
    await _run_all(runner, [*oks, bad], T1)
    await runner.schedule_job("idle", {}, tenant=T1)  # queued, no worker now
    await runner.schedule_job("ok", {}, tenant=T2)
    later = datetime.now(UTC) + timedelta(hours=1)
    await runner.schedule_job_at("idle", {}, later, tenant=T1)  # pending, not yet due

    m = await runner.get_metrics(tenant=T1)
    assert m.by_status["completed"] == 3
    assert m.by_status["failed"] == 1
    assert m.by_status["queued"] == 1
    assert m.by_status["pending"] == 1
    assert m.total == 6
    assert m.failed_last_24h == 1
    assert m.success_rate == pytest.approx(0.75)
    assert m.by_runner_type == {"postgres": 6}
    assert sum(n for _, n in m.throughput_per_minute) == 3
    assert sum(n for _, n in m.extra["failed_per_minute"]) == 1
    assert m.oldest_queued_age_seconds is not None
    assert m.oldest_queued_age_seconds >= 0

    other = await runner.get_metrics(tenant=T2)
    assert other.total == 1
    assert other.by_status["queued"] == 1
    everything = await runner.get_metrics(tenant=ALL_TENANTS)
    assert everything.total == 7


async def test_metrics_counts_temporal_rows(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry
) -> None:
    job = await runner.schedule_job("idle", {}, tenant=T1)
    await _sql(
        runner,
        "UPDATE {schema}.jobs SET runner_type = 'temporal', status = 'processing'"
        " WHERE job_id = %s",
        job.job_id,
    )
    await runner.schedule_job("idle", {}, tenant=T1)
    m = await runner.get_metrics(tenant=T1)
    assert m.by_runner_type == {"postgres": 1, "temporal": 1}
    assert m.by_status["processing"] == 1
    assert m.extra["running"] == 1


async def test_list_jobs_pages_newest_first(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry
) -> None:
    made = await runner.schedule_jobs("idle", [{"n": i} for i in range(7)], tenant=T1)
    await runner.schedule_job("idle", {}, tenant=T2)
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = await runner.list_jobs(tenant=T1, limit=3, cursor=cursor)
        pages += 1
        seen.extend(j.job_id for j in page.jobs)
        assert all(j.tenant == T1 for j in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(j.job_id for j in made)
    assert len(set(seen)) == 7
    page = await runner.list_jobs(tenant=T1, limit=7)
    assert page.next_cursor is None
    keys = [(j.created_at, j.job_id) for j in page.jobs]
    assert keys == sorted(keys, reverse=True)
    everything = await runner.list_jobs(tenant=ALL_TENANTS, limit=500)
    assert {j.tenant for j in everything.jobs} == {T1, T2}


async def test_list_jobs_filters(runner: PostgresJobRunner, handlers: JobHandlerRegistry) -> None:
    ok = (await runner.schedule_job("ok", {"n": 1}, tenant=T1)).job_id
    bad = (await runner.schedule_job("boom", {"n": 7}, tenant=T1)).job_id
    await _run_all(runner, [ok, bad], T1)
    idle = (await runner.schedule_job("idle", {}, tenant=T1)).job_id

    async def ids(**filters: Any) -> set[uuid.UUID]:
        page = await runner.list_jobs(tenant=T1, **filters)
        return {j.job_id for j in page.jobs}

    assert await ids(status="failed") == {bad}
    assert await ids(status=JobStatus.COMPLETED) == {ok}
    assert await ids(status=["failed", "queued"]) == {bad, idle}
    assert await ids(name="ok") == {ok}
    assert await ids(runner_type="postgres") == {ok, bad, idle}
    assert await ids(runner_type="temporal") == set()
    # search: error message, name, id; wildcards in the text match literally
    assert await ids(search="boom 7") == {bad}
    assert await ids(search="100%_done") == {bad}
    assert await ids(search="100%%") == set()
    assert await ids(search="_") == {bad}  # only the error text holds an underscore
    assert await ids(search="IDL") == {idle}
    # the short id the dashboard shows: the random tail (job ids are time-ordered UUIDs)
    assert await ids(search=str(ok)[-8:]) == {ok}
    # date range: aware datetimes in any zone
    plus5 = timezone(timedelta(hours=5))
    now = datetime.now(plus5)
    assert await ids(created_after=now - timedelta(minutes=10)) == {ok, bad, idle}
    assert await ids(created_after=now + timedelta(minutes=10)) == set()
    assert await ids(created_before=now + timedelta(minutes=10)) == {ok, bad, idle}
    assert await ids(created_before=now - timedelta(minutes=10)) == set()
    # another tenant sees none of it
    other = await runner.list_jobs(tenant=T2, search="boom")
    assert other.jobs == []


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": True},
        {"limit": "10"},
        {"cursor": "not-a-cursor!"},
        {"cursor": "W10"},  # base64 of "[]"
        {"status": "exploded"},
        {"status": []},
        {"status": 3},
        {"created_after": datetime(2024, 1, 1)},
        {"created_before": "2024-01-01"},
        {"search": ""},
        {"search": "x" * 201},
        {"name": 5},
        {"tenant": "nope"},
    ],
)
async def test_list_jobs_rejects_bad_arguments(
    runner: PostgresJobRunner, filters: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError):
        await runner.list_jobs(**filters)


def test_cursor_round_trip() -> None:
    job_id = uuid.uuid4()
    stamp = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    created, key = _monitoring.decode_cursor(_monitoring.encode_cursor(stamp, job_id))
    assert key == job_id
    assert created == stamp.replace(tzinfo=None)


async def test_details_of_failed_job(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry
) -> None:
    bad = (await runner.schedule_job("boom", {"n": 3}, tenant=T1, metadata={"m": 1})).job_id
    good = (await runner.schedule_job("ok", {"n": 4}, tenant=T1)).job_id
    await _run_all(runner, [bad, good], T1)
    details = await runner.get_job_details(bad, tenant=T1)
    assert details is not None
    assert details.job.status is JobStatus.FAILED
    assert details.job.error is not None
    assert "boom 3" in details.job.error.message
    assert details.job.error.traceback
    assert "ValueError" in details.job.error.traceback
    assert details.data == {"n": 3}
    assert details.job.metadata["m"] == 1
    attempts = [s for s in details.steps if s.step_name == "attempt"]
    assert [s.status for s in attempts] == [JobStatus.FAILED]
    assert await runner.get_job_details(bad, tenant=T2) is None
    good_details = await runner.get_job_details(good, tenant=T1)
    assert good_details is not None
    assert [s.step_name for s in good_details.steps] == ["work", "attempt"]
    assert good_details.steps[0].result == {"echo": 4}


async def test_retry_failed_job_requeues_and_notifies(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    bad = (await runner.schedule_job("boom", {"n": 9}, tenant=T1)).job_id
    await _run_all(runner, [bad], T1)
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn, autocommit=True) as listener:
        await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(runner.db.channel_jobs)))
        assert await runner.retry_job(bad, tenant=T1) is True
        gen = listener.notifies(timeout=10)
        try:
            note = await anext(gen)
        finally:
            await gen.aclose()
    assert note.payload == "default"
    info = await runner.get_job_status(bad, tenant=T1)
    assert info is not None
    assert info.status is JobStatus.QUEUED
    assert info.attempts == 0
    assert info.error is None
    assert info.metadata["retried_count"] == 1
    details = await runner.get_job_details(bad, tenant=T1)
    assert details is not None
    retry_rows = [s for s in details.steps if s.step_name == "retry"]
    assert len(retry_rows) == 1
    assert "boom 9" in retry_rows[0].result["message"]  # the old error stays in history
    # a worker picks it up again (and it fails again: one more attempt row)
    await _run_all(runner, [bad], T1)
    again = await runner.get_job_details(bad, tenant=T1)
    assert again is not None
    assert again.job.status is JobStatus.FAILED
    assert again.job.attempts == 1
    assert len([s for s in again.steps if s.step_name == "attempt"]) == 2


async def test_retry_refusals(runner: PostgresJobRunner, handlers: JobHandlerRegistry) -> None:
    ok = (await runner.schedule_job("ok", {}, tenant=T1)).job_id
    await _run_all(runner, [ok], T1)
    assert await runner.retry_job(ok, tenant=T1) is False  # completed
    queued = (await runner.schedule_job("idle", {}, tenant=T1)).job_id
    assert await runner.retry_job(queued, tenant=T1) is False  # live
    assert await runner.cancel_job(queued, tenant=T1) is True
    assert await runner.retry_job(queued, tenant=T2) is False  # another tenant's
    assert await runner.retry_job(uuid.uuid4(), tenant=T1) is False
    # a row of another backend is left to that backend
    await _sql(
        runner, "UPDATE {schema}.jobs SET runner_type = 'temporal' WHERE job_id = %s", queued
    )
    assert await runner.retry_job(queued, tenant=T1) is False
    await _sql(
        runner, "UPDATE {schema}.jobs SET runner_type = 'postgres' WHERE job_id = %s", queued
    )
    assert await runner.retry_job(queued, tenant=T1) is True  # cancelled -> queued
    with pytest.raises(InvalidArgumentError):
        await runner.retry_job("zzz", tenant=T1)


async def test_retry_respects_singleton(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry
) -> None:
    first = await runner.schedule_job("idle", {}, tenant=T1, singleton_key="k")
    assert await runner.cancel_job(first.job_id, tenant=T1)
    second = await runner.schedule_job("idle", {}, tenant=T1, singleton_key="k")
    assert second.created
    assert await runner.retry_job(first.job_id, tenant=T1) is False
    assert await runner.cancel_job(second.job_id, tenant=T1)
    assert await runner.retry_job(first.job_id, tenant=T1) is True


async def test_clear_history_scopes_and_live_rows(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry
) -> None:
    ok = (await runner.schedule_job("ok", {}, tenant=T1)).job_id
    bad = (await runner.schedule_job("boom", {}, tenant=T1)).job_id
    await _run_all(runner, [ok, bad], T1)
    other_ok = (await runner.schedule_job("ok", {}, tenant=T2)).job_id
    await _run_all(runner, [other_ok], T2)
    # from here on no worker runs: these stay as they are
    cancelled = (await runner.schedule_job("idle", {}, tenant=T1)).job_id
    await runner.cancel_job(cancelled, tenant=T1)
    live = (await runner.schedule_job("idle", {}, tenant=T1)).job_id
    tracker = (await runner.schedule_job("idle", {}, tenant=T1)).job_id
    await _sql(runner, "UPDATE {schema}.jobs SET status = 'active' WHERE job_id = %s", tracker)

    # older_than excludes the fresh rows
    assert await runner.clear_history(tenant=T1, scope="all", older_than=3600) == 0
    assert await runner.clear_history(tenant=T1, scope="finished") == 1
    assert await runner.get_job_status(ok, tenant=T1) is None
    assert await runner.get_job_status(bad, tenant=T1) is not None
    # job_details rows went with their job
    left = await _sql(
        runner, "SELECT count(*) AS n FROM {schema}.job_details WHERE job_id = %s", ok
    )
    assert left[0]["n"] == 0
    assert await runner.clear_history(tenant=T1, scope="all", older_than=timedelta(0)) == 2
    for gone in (bad, cancelled):
        assert await runner.get_job_status(gone, tenant=T1) is None
    for kept in (live, tracker):
        assert await runner.get_job_status(kept, tenant=T1) is not None
    # the other tenant's history was not touched until asked for
    assert await runner.get_job_status(other_ok, tenant=T2) is not None
    assert await runner.clear_history(tenant=ALL_TENANTS, scope="all") == 1


async def test_clear_history_older_than_uses_completion_time(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry
) -> None:
    ids = [(await runner.schedule_job("ok", {}, tenant=T1)).job_id for _ in range(3)]
    await _run_all(runner, ids, T1)
    await _sql(
        runner,
        "UPDATE {schema}.jobs SET completed_at = now() - interval '10 days' WHERE job_id = %s",
        ids[0],
    )
    assert await runner.clear_history(tenant=T1, older_than=timedelta(days=7)) == 1
    assert await runner.get_job_status(ids[0], tenant=T1) is None
    assert await runner.get_job_status(ids[1], tenant=T1) is not None


@pytest.mark.parametrize(
    ("scope", "older_than"),
    [("everything", None), (None, None), ("all", -1), ("all", "7d"), ("all", float("nan"))],
)
async def test_clear_history_rejects_bad_arguments(
    runner: PostgresJobRunner, scope: Any, older_than: Any
) -> None:
    with pytest.raises(InvalidArgumentError):
        await runner.clear_history(scope=scope, older_than=older_than)


async def test_list_is_one_statement(
    runner: PostgresJobRunner, handlers: JobHandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    await runner.schedule_jobs("idle", [{} for _ in range(20)], tenant=T1)
    executed: list[str] = []
    real = runner.db.connection

    import contextlib

    @contextlib.asynccontextmanager
    async def counting() -> Any:
        async with real() as conn:
            original = conn.execute

            async def execute(query: Any, *args: Any, **kw: Any) -> Any:
                executed.append(str(query)[:40])
                return await original(query, *args, **kw)

            conn.execute = execute  # type: ignore[method-assign]
            try:
                yield conn
            finally:
                conn.execute = original  # type: ignore[method-assign]

    monkeypatch.setattr(runner.db, "connection", counting)
    page = await runner.list_jobs(tenant=T1, limit=20)
    assert len(page.jobs) == 20
    assert len(executed) == 1
    executed.clear()
    # the monitoring part of get_metrics (backends may add their own figures to .extra)
    await _monitoring.get_metrics(runner.db, tenant=T1)
    assert len(executed) == 1
    executed.clear()
    await runner.get_job_details(page.jobs[0].job_id, tenant=T1)
    # job, its data, its relations (dependencies, dependents, children), its steps:
    # independent of the step and relation counts
    assert len(executed) == 4


async def test_concurrent_reads(runner: PostgresJobRunner, handlers: JobHandlerRegistry) -> None:
    await runner.schedule_jobs("idle", [{} for _ in range(5)], tenant=T1)
    results = await asyncio.gather(
        *(runner.get_metrics(tenant=T1) for _ in range(3)),
        *(runner.list_jobs(tenant=T1) for _ in range(3)),
    )
    assert all(getattr(r, "total", 5) == 5 for r in results)
