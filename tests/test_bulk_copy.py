"""Bulk enqueue through COPY: the rows it writes, its ids, and its edge cases (singleton keys,
the caller's transaction, a refused item, large calls, a non-UTF-8 connection)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from apps.helpers import count_jobs, fetch
from jobrunner import (
    InvalidArgumentError,
    JobContext,
    JobHandlerRegistry,
    JobStatus,
    RetryPolicy,
    SyncJobRunner,
    UnavailableError,
    UnknownOptionError,
)
from jobrunner._jobargs import new_job_id, new_job_ids
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._enqueue import _uuid

TENANT = uuid.UUID("33333333-3333-3333-3333-333333333333")
USER = uuid.UUID("44444444-4444-4444-4444-444444444444")

# Every column an enqueue writes or defaults; job_id, data and the timestamps differ per job.
COLUMNS = (
    "tenant, type, metadata, status::text AS status, user_id, runner_type, external_id, "
    "external_run_id, queue, priority, result, error, progress, progress_message, attempts, "
    "lease_token, max_attempts, lease_expires_at, worker_id, started_at, completed_at, "
    "singleton_key, schedule_id, policy"
)


async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
    return None


def test_job_ids_are_version_7_and_time_ordered() -> None:
    single = [new_job_id() for _ in range(50)]
    assert all(key.version == 7 and key.variant == uuid.RFC_4122 for key in single)
    millis = [key.int >> 80 for key in single]
    assert millis == sorted(millis)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert abs(millis[-1] - now_ms) < 60_000
    first = new_job_ids(5000)
    batch = [_uuid(first + i) for i in range(5000)]
    assert batch == [uuid.UUID(int=first + i) for i in range(5000)]  # the fast constructor
    assert all(key.version == 7 and key.variant == uuid.RFC_4122 for key in batch)
    assert batch == sorted(batch) and len(set(batch)) == 5000
    assert str(batch[0]) == str(uuid.UUID(int=first)) and hash(batch[0]) == hash(
        uuid.UUID(int=first)
    )


async def test_copy_rows_equal_insert_job_rows(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    """A job of a bulk holds what schedule_job writes for the same arguments, in every column,
    for run_at absent, past and future; timestamps are the transaction's now()."""
    registry.add("copy-cols", noop, retry=RetryPolicy(max_attempts=7), queue="q-copy")
    options: dict[str, Any] = {
        "tenant": TENANT,
        "user_id": USER,
        "priority": -3,
        "metadata": {"src": 't\\est\t"é"', "n": [1, 2.5, None]},
    }
    past = datetime.now(UTC) - timedelta(minutes=5)
    future = datetime.now(UTC) + timedelta(hours=2)
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
        single = await runner.schedule_job("copy-cols", {"i": 0}, connection=conn, **options)
        single_past = await runner.schedule_job_at(
            "copy-cols", {"i": 0}, past, connection=conn, **options
        )
        single_future = await runner.schedule_job_at(
            "copy-cols", {"i": 0}, future, connection=conn, **options
        )
        bulk = await runner.schedule_jobs("copy-cols", [{"i": 1}, None], connection=conn, **options)
        bulk_past = await runner.schedule_jobs(
            "copy-cols", [{"i": 2}], run_at=past, connection=conn, **options
        )
        bulk_future = await runner.schedule_jobs(
            "copy-cols", [{"i": 3}], run_at=future, connection=conn, **options
        )
        now = (await (await conn.execute("SELECT now()")).fetchone())[0]  # type: ignore[index]
        await conn.commit()

    async def row(job_id: uuid.UUID) -> dict[str, Any]:
        found = await fetch(
            runner,
            f"SELECT {COLUMNS}, created_at, updated_at, run_at, data "
            "FROM {schema}.jobs_live WHERE tenant = %s AND job_id = %s",
            TENANT,
            job_id,
        )
        assert len(found) == 1
        return found[0]

    def shared(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in ("data",)}

    for one, many, status, run_at in (
        (single, bulk, "queued", now),
        (single_past, bulk_past, "queued", past),
        (single_future, bulk_future, "pending", future),
    ):
        expected = await row(one.job_id)
        for handle in many:
            got = await row(handle.job_id)
            assert shared(got) == shared(expected)
            assert got["status"] == status and got["run_at"] == run_at
            assert (
                got["created_at"] == got["updated_at"] == now.astimezone(UTC).replace(tzinfo=None)
            )
    assert (await row(bulk[1].job_id))["data"] == {}
    assert (await row(bulk[0].job_id))["data"] == {"i": 1}
    assert (await row(single.job_id))["policy"]["max_attempts"] == 7


async def test_payloads_round_trip_through_copy(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("copy-data", noop)
    payloads: list[dict[str, Any]] = [
        {"s": 'back\\slash "quote" tab\t newline\n é ✓ 🚀 \u2028'},
        {"nested": {"a": [1, {"b": None}], "t": True, "f": 1.5}},
        {"": "", "k\\": "\\u0000 is text here"},
        {"big": "x" * 100_000},
        {},
    ]
    handles = await runner.schedule_jobs("copy-data", payloads)
    for handle, payload in zip(handles, payloads, strict=True):
        rows = await fetch(
            runner, "SELECT data FROM {schema}.jobs WHERE job_id = %s", handle.job_id
        )
        assert rows[0]["data"] == payload


async def test_bulk_ids_follow_input_order_and_claim_order(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("copy-order", noop)
    handles = await runner.schedule_jobs("copy-order", [{"i": i} for i in range(3000)])
    ids = [h.job_id for h in handles]
    assert ids == sorted(ids) and all(key.version == 7 for key in ids)
    rows = await fetch(
        runner,
        "SELECT (data->>'i')::int AS i FROM {schema}.jobs "
        "ORDER BY queue, priority DESC, run_at, job_id",
    )
    assert [r["i"] for r in rows] == list(range(3000))  # claim order is input order


async def test_singleton_keys_and_bulk(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """schedule_jobs takes no singleton key (so its COPY can meet no conflict); a held key
    does not stop a bulk of the same name, and still holds after it."""
    registry.add("copy-single", noop)
    with pytest.raises(UnknownOptionError):
        await runner.schedule_jobs("copy-single", [{}], singleton_key="k")  # type: ignore[call-arg]
    assert await count_jobs(runner) == 0
    held = await runner.schedule_job("copy-single", {"held": True}, singleton_key="k")
    handles = await runner.schedule_jobs("copy-single", [{"i": i} for i in range(10)])
    assert len(handles) == 10 and await count_jobs(runner) == 11
    again = await runner.schedule_job("copy-single", {"held": False}, singleton_key="k")
    assert again.created is False and again.job_id == held.job_id


async def test_bad_item_fails_the_whole_call_with_nothing_written(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("copy-bad", noop)
    good: list[Any] = [{"i": i} for i in range(3000)]
    for bad, message in (
        ({"x": math.nan}, r"data\[2500\] must be JSON-serialisable"),
        ({"x": "\x00"}, r"data\[2500\] must not contain NUL"),
        ({"x": "\ud800"}, r"data\[2500\] must be valid Unicode"),
        ("text", r"data\[2500\] must be a mapping"),
        ({"x": object()}, r"data\[2500\] must be JSON-serialisable"),
    ):
        items = [*good[:2500], bad, *good[2500:]]
        with pytest.raises(InvalidArgumentError, match=message):
            await runner.schedule_jobs("copy-bad", items)
        async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
            with pytest.raises(InvalidArgumentError, match=message):
                await runner.schedule_jobs("copy-bad", items, connection=conn)
            # the caller's transaction is untouched and goes on
            kept = await runner.schedule_jobs("copy-bad", [{"ok": 1}], connection=conn)
            await conn.rollback()
        assert await runner.get_job_status(kept[0].job_id) is None
    assert await count_jobs(runner) == 0


async def test_connection_rollback_leaves_nothing_and_sends_no_notify(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    registry.add("copy-tx", noop)
    channel = runner.db.channel_jobs
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{channel}"')
        async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
            rolled = await runner.schedule_jobs(
                "copy-tx", [{"i": i} for i in range(2500)], connection=conn
            )
            await conn.rollback()
            kept = await runner.schedule_jobs(
                "copy-tx", [{"i": i} for i in range(2500)], connection=conn
            )
            await conn.commit()
        notes = [n async for n in listener.notifies(timeout=1.0)]
    assert [n.payload for n in notes] == ["default"]  # one NOTIFY per call, none rolled back
    assert await count_jobs(runner) == 2500
    assert await runner.get_job_status(rolled[0].job_id) is None
    info = await runner.get_job_status(kept[-1].job_id)
    assert info is not None and info.status is JobStatus.QUEUED


def test_sync_connection_rollback_and_bad_item(
    registry: JobHandlerRegistry, jobrunner_dsn: str, schema: str
) -> None:
    registry.add("copy-sync", noop)
    with (
        SyncJobRunner(PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry)) as sync,
        psycopg.connect(jobrunner_dsn) as conn,
    ):
        rolled = sync.schedule_jobs("copy-sync", [{"i": i} for i in range(1500)], connection=conn)
        conn.rollback()
        with pytest.raises(InvalidArgumentError):
            sync.schedule_jobs("copy-sync", [{}, {"x": math.inf}], connection=conn)
        kept = sync.schedule_jobs("copy-sync", [{"i": i} for i in range(1500)], connection=conn)
        conn.commit()
        assert sync.get_job_status(rolled[0].job_id) is None
        assert [
            sync.get_job_status(h.job_id).status  # type: ignore[union-attr]
            for h in (kept[0], kept[-1])
        ] == [JobStatus.QUEUED, JobStatus.QUEUED]


async def test_ten_thousand_jobs_in_one_call(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("copy-10k", noop)
    handles = await runner.schedule_jobs(
        "copy-10k", [{"i": i} for i in range(10_000)], tenant=TENANT
    )
    assert len({h.job_id for h in handles}) == 10_000
    rows = await fetch(
        runner,
        "SELECT job_id, (data->>'i')::int AS i FROM {schema}.jobs WHERE tenant = %s",
        TENANT,
    )
    by_id = {r["job_id"]: r["i"] for r in rows}
    assert [by_id[h.job_id] for h in handles] == list(range(10_000))


async def test_non_utf8_connection_falls_back_to_statements(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, jobrunner_dsn: str
) -> None:
    """COPY data is UTF-8: on a LATIN1 connection the jobs go through statements whose
    parameters psycopg encodes, and arrive intact."""
    registry.add("copy-latin1", noop)
    payloads = [{"i": i, "s": "café"} for i in range(1500)]
    async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
        await conn.execute("SET client_encoding TO 'LATIN1'")
        assert conn.info.encoding != "utf-8"
        handles = await runner.schedule_jobs(
            "copy-latin1", payloads, connection=conn, metadata={"m": "é"}
        )
        await conn.commit()
    rows = await fetch(
        runner, "SELECT job_id, data, metadata, status::text AS s FROM {schema}.jobs"
    )
    by_id = {r["job_id"]: r for r in rows}
    assert [by_id[h.job_id]["data"] for h in handles] == payloads
    assert {r["s"] for r in rows} == {"queued"}
    assert all(r["metadata"] == {"m": "é"} for r in rows)


@pytest.mark.parametrize("committed", [True, False])
async def test_bulk_after_a_lost_reply_writes_each_job_once(
    runner: PostgresJobRunner,
    registry: JobHandlerRegistry,
    monkeypatch: pytest.MonkeyPatch,
    committed: bool,
) -> None:
    """The connection drops after the COPY committed (or before anything was written): the
    call finds its first job's row, or writes the same jobs again; never twice."""
    registry.add("copy-lost", noop)
    real = PostgresJobRunner._write_bulk
    calls: list[int] = []

    async def lose_reply(self: PostgresJobRunner, jobs: Any) -> list[Any]:
        calls.append(len(jobs))
        if len(calls) == 1:
            if committed:
                await real(self, jobs)
            raise UnavailableError("connection lost")
        return await real(self, jobs)

    monkeypatch.setattr(PostgresJobRunner, "_write_bulk", lose_reply)
    handles = await runner.schedule_jobs("copy-lost", [{"i": i} for i in range(1200)])
    assert calls == ([1200] if committed else [1200, 1200])
    rows = await fetch(runner, "SELECT job_id FROM {schema}.jobs")
    assert sorted(r["job_id"] for r in rows) == [h.job_id for h in handles]


async def test_bulk_commit_landing_after_the_check_is_not_written_twice(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first commit lands after the call looked for it: the second COPY meets the jobs'
    own primary key, and the call reports them as written."""
    registry.add("copy-late", noop)
    real = PostgresJobRunner._write_bulk
    calls: list[int] = []

    async def late_commit(self: PostgresJobRunner, jobs: Any) -> list[Any]:
        calls.append(len(jobs))
        result = await real(self, jobs)
        if len(calls) == 1:
            raise UnavailableError("connection lost")
        return result

    async def not_found_yet(self: PostgresJobRunner, params: dict[str, Any]) -> bool:
        return False

    monkeypatch.setattr(PostgresJobRunner, "_write_bulk", late_commit)
    monkeypatch.setattr(PostgresJobRunner, "_own_job_exists", not_found_yet)
    handles = await runner.schedule_jobs("copy-late", [{"i": i} for i in range(300)])
    assert calls == [300, 300]
    rows = await fetch(runner, "SELECT job_id FROM {schema}.jobs")
    assert sorted(r["job_id"] for r in rows) == [h.job_id for h in handles]
