"""Scheduling: handles, stored columns, delayed jobs, priorities, singletons, bulk, health."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apps.helpers import count_jobs, fetch, job_row
from jobrunner import (
    HandlerNotFoundError,
    JobContext,
    JobHandlerRegistry,
    JobStatus,
    ScheduledJob,
)
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

TENANT = uuid.UUID("22222222-2222-2222-2222-222222222222")


async def noop(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    return {"echo": data}


async def test_schedule_job_handle_and_row(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("generate-invoice", noop, queue="billing")
    user = uuid.uuid4()
    handle = await runner.schedule_job(
        "generate-invoice",
        {"cycle": "c-1"},
        tenant=str(TENANT),
        priority=5,
        user_id=user,
        metadata={"source": "test"},
    )
    assert isinstance(handle, ScheduledJob)
    assert isinstance(handle.job_id, uuid.UUID)
    assert handle.external_id == str(handle.job_id)
    assert handle.tenant == TENANT and handle.created is True

    info = await runner.get_job_status(handle.job_id, tenant=TENANT)
    assert info is not None
    assert info.status is JobStatus.QUEUED
    assert info.name == "generate-invoice"
    assert info.progress == 0 and info.progress_message is None
    assert info.result is None and info.error is None
    assert info.attempts == 0 and info.max_attempts == 3
    assert info.metadata == {"source": "test"}
    assert info.runner_type == "postgres"
    assert info.queue == "billing" and info.priority == 5
    assert info.user_id == user
    assert info.created_at is not None and info.created_at.tzinfo is not None
    assert abs(info.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert info.started_at is None and info.completed_at is None

    row = await job_row(runner, handle.job_id)
    assert row["data"] == {"cycle": "c-1"}
    assert row["type"] == "generate-invoice"
    assert row["tenant"] == TENANT


async def test_explicit_queue_and_system_tenant(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("q", noop)
    handle = await runner.schedule_job("q", None, queue="special")
    info = await runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.queue == "special"
    assert info.tenant == uuid.UUID(int=0)
    assert info.user_id == uuid.UUID(int=0)
    assert (await job_row(runner, handle.job_id))["data"] == {}


async def test_schedule_job_at_future_and_past(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("later", noop)
    run_at = datetime.now(UTC) + timedelta(hours=2)
    future = await runner.schedule_job_at("later", {"u": 1}, run_at, tenant=TENANT)
    info = await runner.get_job_status(future.job_id, tenant=TENANT)
    assert info is not None and info.status is JobStatus.PENDING
    assert info.run_at == run_at
    # another timezone, same instant
    tz = datetime.now(UTC).astimezone().tzinfo
    past = await runner.schedule_job_at(
        "later", {}, (datetime.now(UTC) - timedelta(minutes=1)).astimezone(tz), tenant=TENANT
    )
    info2 = await runner.get_job_status(past.job_id, tenant=TENANT)
    assert info2 is not None and info2.status is JobStatus.QUEUED


async def test_delayed_job_starts_on_time_by_timer(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """With a 60 s safety poll, only the timer on the next due job can start it in time."""
    ran = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        ran.set()

    registry.add("delayed", handler)
    async with running_worker(runner, poll_interval=60.0):
        run_at = datetime.now(UTC) + timedelta(seconds=0.8)
        handle = await runner.schedule_job_at("delayed", {}, run_at)
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert ran.is_set()
    assert info.status is JobStatus.COMPLETED
    assert info.started_at is not None and info.started_at >= run_at


async def test_priority_higher_first(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    order: list[int] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        order.append(data["p"])

    registry.add("prio", handler)
    for p in (0, 10, -5, 3, 100):
        await runner.schedule_job("prio", {"p": p}, priority=p)
    async with running_worker(runner, concurrency=1):
        last = await runner.schedule_job("prio", {"p": -100}, priority=-100)
        await runner.wait_for_job(last.job_id, timeout=30)
    assert order == [100, 10, 3, 0, -5, -100]


async def test_singleton_key(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> None:
    gate = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        await gate.wait()
        return int(data["n"])

    registry.add("single", handler)
    first = await runner.schedule_job("single", {"n": 1}, singleton_key="k", tenant=TENANT)
    second = await runner.schedule_job("single", {"n": 2}, singleton_key="k", tenant=TENANT)
    assert first.created is True
    assert second.created is False
    assert second.job_id == first.job_id
    # another key, and the same key in another tenant, are separate jobs
    other_key = await runner.schedule_job("single", {"n": 3}, singleton_key="k2", tenant=TENANT)
    other_tenant = await runner.schedule_job("single", {"n": 4}, singleton_key="k")
    assert other_key.created and other_tenant.created
    assert len({first.job_id, other_key.job_id, other_tenant.job_id}) == 3
    # a future (pending) job also holds the key
    pending = await runner.schedule_job_at(
        "single", {"n": 5}, datetime.now(UTC) + timedelta(hours=1), singleton_key="k3"
    )
    again = await runner.schedule_job("single", {"n": 6}, singleton_key="k3")
    assert again.created is False and again.job_id == pending.job_id

    async with running_worker(runner, concurrency=4):
        # while it runs, the key is still taken
        async def running() -> bool:
            info = await runner.get_job_status(first.job_id, tenant=TENANT)
            return info is not None and info.status is JobStatus.PROCESSING

        deadline = asyncio.get_running_loop().time() + 30
        while not await running():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        during = await runner.schedule_job("single", {"n": 7}, singleton_key="k", tenant=TENANT)
        assert during.created is False and during.job_id == first.job_id
        gate.set()
        done = await runner.wait_for_job(first.job_id, tenant=TENANT, timeout=30)
        assert done.status is JobStatus.COMPLETED and done.result == 1
        third = await runner.schedule_job("single", {"n": 8}, singleton_key="k", tenant=TENANT)
        assert third.created is True and third.job_id != first.job_id
        info = await runner.wait_for_job(third.job_id, tenant=TENANT, timeout=30)
        assert info.result == 8
    rows = await fetch(runner, "SELECT count(*) AS n FROM {schema}.jobs WHERE singleton_key = 'k'")
    assert rows[0]["n"] == 3  # first, other tenant's, third


async def test_bulk_schedule_in_order_across_batches(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("bulk", noop)
    handles = await runner.schedule_jobs(
        "bulk",
        ({"i": i} for i in range(2500)),
        tenant=TENANT,
        priority=2,
        metadata={"batch": "b1"},
    )
    assert len(handles) == 2500
    assert len({h.job_id for h in handles}) == 2500
    assert all(h.tenant == TENANT and h.external_id == str(h.job_id) for h in handles)
    rows = await fetch(
        runner,
        "SELECT job_id, (data->>'i')::int AS i, status::text AS status, priority, metadata "
        "FROM {schema}.jobs WHERE tenant = %s",
        TENANT,
    )
    by_id = {r["job_id"]: r for r in rows}
    assert len(by_id) == 2500
    assert [by_id[h.job_id]["i"] for h in handles] == list(range(2500))
    assert {r["status"] for r in rows} == {"queued"}
    assert {r["priority"] for r in rows} == {2}
    assert all(r["metadata"] == {"batch": "b1"} for r in rows)
    assert await runner.schedule_jobs("bulk", []) == []


async def test_bulk_runs(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> None:
    registry.add("bulk-run", noop)
    handles = await runner.schedule_jobs("bulk-run", [{"i": i} for i in range(50)])
    async with running_worker(runner, concurrency=10):
        infos = await asyncio.gather(*(runner.wait_for_job(h.job_id, timeout=60) for h in handles))
    assert [i.result for i in infos] == [{"echo": {"i": i}} for i in range(50)]


async def test_delayed_bulk_is_pending(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("bulk-later", noop)
    handles = await runner.schedule_jobs(
        "bulk-later", [{}, {}], run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    for h in handles:
        info = await runner.get_job_status(h.job_id)
        assert info is not None and info.status is JobStatus.PENDING


async def test_unknown_handler_rejected(runner: PostgresJobRunner) -> None:
    with pytest.raises(HandlerNotFoundError, match=r"^No handler registered for job: ghost$"):
        await runner.schedule_job("ghost", {})
    with pytest.raises(HandlerNotFoundError):
        await runner.schedule_job_at("ghost", {}, datetime.now(UTC))
    with pytest.raises(HandlerNotFoundError):
        await runner.schedule_jobs("ghost", [{}])
    assert await count_jobs(runner) == 0


async def test_unknown_handler_allowed_then_failed_by_worker_without_retry(
    make_runner: Any, registry: JobHandlerRegistry
) -> None:
    producer = await make_runner(require_registered=False)
    handle = await producer.schedule_job("ghost", {"x": 1})
    assert (await producer.get_job_status(handle.job_id)) is not None
    registry.add("known", noop)
    async with running_worker(producer, rand=lambda: 0.5):
        info = await producer.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.FAILED
    assert info.attempts == 1
    assert info.error is not None
    assert info.error.message == "No handler registered for job: ghost"
    assert info.error.type.endswith("HandlerNotFoundError")


async def test_is_healthy(runner: PostgresJobRunner) -> None:
    assert await runner.is_healthy() is True
    dead = PostgresJobRunner("postgresql://postgres@127.0.0.1:1/none", pool_size=1)
    try:
        assert await dead.is_healthy() is False
    finally:
        await dead.close()


async def test_concurrent_first_calls_start_the_runner_once(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    registry.add("lazy", noop)
    lazy = PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=3)
    try:
        handles = await asyncio.gather(*(lazy.schedule_job("lazy", {"i": i}) for i in range(8)))
        infos = await asyncio.gather(*(lazy.get_job_status(h.job_id) for h in handles))
        assert all(i is not None and i.status is JobStatus.QUEUED for i in infos)
    finally:
        await lazy.close()


async def test_custom_queue_needs_a_worker_on_that_queue(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """Workers claim from their handlers' queues plus ``default`` unless told otherwise."""
    registry.add("routed", noop)
    handle = await runner.schedule_job("routed", {"x": 1}, queue="special")
    async with running_worker(runner) as worker:
        assert "special" not in worker.queues  # type: ignore[attr-defined]
        other = await runner.schedule_job("routed", {"x": 2})
        await runner.wait_for_job(other.job_id, timeout=30)
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.QUEUED
    async with running_worker(runner, queues=["special"]):
        done = await runner.wait_for_job(handle.job_id, timeout=30)
    assert done.status is JobStatus.COMPLETED and done.result == {"echo": {"x": 1}}


async def test_concurrent_singleton_calls_create_one_job(
    make_runner: Any, registry: JobHandlerRegistry
) -> None:
    registry.add("single-race", noop)
    runners = [await make_runner() for _ in range(3)]
    handles = await asyncio.gather(
        *(
            runners[i % 3].schedule_job("single-race", {"i": i}, singleton_key="race")
            for i in range(12)
        )
    )
    assert len({h.job_id for h in handles}) == 1
    assert sum(h.created for h in handles) == 1
    assert await count_jobs(runners[0]) == 1


async def test_longest_schema_name_works_end_to_end(
    jobrunner_dsn: str, registry: JobHandlerRegistry
) -> None:
    import psycopg
    from psycopg import sql

    schema = ("jrt_long_" + uuid.uuid4().hex * 2)[:53]
    registry.add("long-schema", noop)
    long_runner = PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2)
    try:
        async with running_worker(long_runner, poll_interval=60.0):
            handle = await long_runner.schedule_job("long-schema", {"n": 1})
            info = await long_runner.wait_for_job(handle.job_id, timeout=30)
        assert info.status is JobStatus.COMPLETED and info.result == {"echo": {"n": 1}}
    finally:
        await long_runner.close()
        async with await psycopg.AsyncConnection.connect(jobrunner_dsn, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


async def test_enqueue_survives_killed_pooled_connections(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """The enqueue skips the pool's liveness round trip; a dead pooled connection makes it
    retry on a checked one, so a server-side kill of every pooled connection loses no job
    and raises nothing."""
    registry.add("generate-invoice", noop)
    pids: list[int] = []
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(4):  # the runner's whole pool (pool_size=4), all open at once
            conn = await stack.enter_async_context(runner.db.connection())
            row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
            pids.append(row["pid"])  # type: ignore[index]
    killer = await runner.db.dedicated_connection()
    try:
        for pid in pids:
            await killer.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        handles = [await runner.schedule_job("generate-invoice", {"i": i}) for i in range(3)]
    finally:
        await killer.close()
    assert [h.created for h in handles] == [True, True, True]
    assert await count_jobs(runner) == 3


async def test_enqueue_retry_after_a_lost_reply_reports_the_committed_job(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try commits but its reply is lost (connection dropped): the retry finds the
    job's own row (the job id is the client's) and reports the job as created, once."""
    from jobrunner import UnavailableError

    registry.add("generate-invoice", noop)
    real = PostgresJobRunner._insert_pooled
    calls: list[bool] = []

    async def commit_then_lose_reply(
        self: PostgresJobRunner, params: dict[str, Any], *, checked: bool
    ) -> ScheduledJob:
        calls.append(checked)
        result = await real(self, params, checked=checked)
        if len(calls) == 1:
            raise UnavailableError("connection lost after commit")
        return result

    monkeypatch.setattr(PostgresJobRunner, "_insert_pooled", commit_then_lose_reply)
    handle = await runner.schedule_job("generate-invoice", {"cycle": "c-9"})
    assert calls == [False]
    assert handle.created is True
    rows = await fetch(runner, "SELECT job_id FROM {schema}.jobs WHERE type = 'generate-invoice'")
    assert [r["job_id"] for r in rows] == [handle.job_id]


async def test_enqueue_retry_after_a_lost_reply_finds_a_job_that_already_finished(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed job finished (its row moved to jobs_finished) before the retry: the
    retry must not insert it a second time into jobs_live."""
    from jobrunner import UnavailableError

    registry.add("generate-invoice", noop)
    real = PostgresJobRunner._insert_pooled
    calls: list[bool] = []

    async def commit_finish_then_lose_reply(
        self: PostgresJobRunner, params: dict[str, Any], *, checked: bool
    ) -> ScheduledJob:
        calls.append(checked)
        result = await real(self, params, checked=checked)
        if len(calls) == 1:
            await fetch(
                self,
                "UPDATE {schema}.jobs SET status = 'completed' WHERE job_id = %s RETURNING 1",
                result.job_id,
            )
            raise UnavailableError("connection lost after commit")
        return result

    monkeypatch.setattr(PostgresJobRunner, "_insert_pooled", commit_finish_then_lose_reply)
    handle = await runner.schedule_job("generate-invoice", {"cycle": "c-10"})
    assert handle.created is True
    rows = await fetch(
        runner, "SELECT job_id, status FROM {schema}.jobs WHERE type = 'generate-invoice'"
    )
    assert [(r["job_id"], r["status"]) for r in rows] == [(handle.job_id, "completed")]


async def test_payload_encoded_once_arrives_intact_in_any_client_encoding(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    """A single enqueue sends the JSON its validation encoded; that JSON is UTF-8, so
    non-ASCII payloads and metadata still arrive intact on a connection whose client
    encoding is not (LATIN1 here), with or without dependencies; the stored policy is the
    handler's."""
    import psycopg

    from jobrunner._policy import JobPolicy

    registry.add("encoded-once", noop)
    first = await runner.schedule_job("encoded-once", {"a": 1}, metadata={"m": "ascii"})
    payloads = [{"s": "café", "n": [1, 2.5, None]}, {"s": "plain"}]
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
        await conn.execute("SET client_encoding TO 'LATIN1'")
        assert conn.info.encoding != "utf-8"
        handles = [
            await runner.schedule_job("encoded-once", data, connection=conn, metadata={"m": "é"})
            for data in payloads
        ]
        handles.append(
            await runner.schedule_job(
                "encoded-once", payloads[0], connection=conn, depends_on=[first.job_id]
            )
        )
        await conn.commit()
    for handle, data in zip(handles, [*payloads, payloads[0]], strict=True):
        row = await job_row(runner, handle.job_id)
        assert row["data"] == data
    assert (await job_row(runner, handles[0].job_id))["metadata"] == {"m": "é"}
    row = await job_row(runner, first.job_id)
    assert row["metadata"] == {"m": "ascii"}
    spec = registry.find("encoded-once")
    assert spec is not None
    assert JobPolicy.from_json(row["policy"]) == spec.policy


async def test_pooled_connection_keeps_one_cursor_for_statement_steps(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """Steps on a pooled connection run on the cursor it keeps (a new cursor per enqueue
    cost a tenth of its client CPU): results stay each statement's own, a singleton hit
    (two statements) included, and a closed cursor is replaced."""
    from jobrunner._db._database import PoolConnection
    from jobrunner.backends.postgres._enqueue import insert_one, run_async

    registry.add("cursor-kept", noop)
    await runner.start()
    params = [
        runner.prepare_insert("cursor-kept", {"n": n}, None, {"singleton_key": key})
        for n, key in ((1, "a"), (2, "b"), (3, "a"))
    ]
    async with runner.db.connection() as conn:
        assert isinstance(conn, PoolConnection)
        kept = conn.steps_cursor()
        first = await run_async(conn, insert_one(runner.db.queries, params[0]))
        second = await run_async(conn, insert_one(runner.db.queries, params[1]))
        held = await run_async(conn, insert_one(runner.db.queries, params[2]))
        assert conn.steps_cursor() is kept
        await kept.close()
        again = await run_async(
            conn,
            insert_one(runner.db.queries, runner.prepare_insert("cursor-kept", {"n": 4}, None, {})),
        )
        assert conn.steps_cursor() is not kept
    assert first is not None and second is not None and held is not None and again is not None
    assert first.created and second.created and again.created
    assert first.job_id == params[0]["job_id"] and second.job_id == params[1]["job_id"]
    assert held.created is False and held.job_id == first.job_id
    assert await count_jobs(runner) == 3
