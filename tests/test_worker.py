"""The worker: results, retries with exact backoff, Retry/NonRetryable, timeouts, exclusivity,
reconnection and the start-up banner."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import UTC, timedelta
from typing import Any

import psycopg
import pytest

from apps.helpers import details, eventually, fetch, install_status_log, job_row, status_history
from jobrunner import (
    JobContext,
    JobHandlerRegistry,
    JobStatus,
    NonRetryable,
    Retry,
    RetryPolicy,
)
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker

HALF = {"rand": lambda: 0.5}  # jitter-neutral: every delay is exactly the policy's base delay


class CustomError(Exception):
    pass


async def failed_at(
    runner: PostgresJobRunner, job_id: uuid.UUID, attempt: int = 1
) -> tuple[dict[str, Any], float]:
    """Wait until ``attempt`` failed and the job waits for a retry; return its row and
    ``run_at - failure time``."""
    row = await eventually(
        lambda: job_row(runner, job_id),
        lambda r: r["status"] == "retrying" and r["attempts"] == attempt,
        what=f"status retrying after attempt {attempt}",
    )
    # run_at is timestamptz; updated_at is a UTC TIMESTAMP written by the same statement.
    return row, (row["run_at"] - row["updated_at"].replace(tzinfo=UTC)).total_seconds()


async def fast_forward(runner: PostgresJobRunner, job_id: uuid.UUID) -> None:
    """Make a waiting retry due now and tell workers (instead of sleeping through backoff)."""
    await fetch(runner, "UPDATE {schema}.jobs SET run_at = now() WHERE job_id = %s", job_id)
    await fetch(runner, "SELECT pg_notify(%s, 'default')", runner.db.channel_jobs)


async def test_result_is_stored(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> None:
    seen: list[JobContext] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        seen.append(ctx)
        return {"pdf": f"invoice-{data['cycle']}", "n": [1, 2.5, None, True]}

    registry.add("generate-invoice", handler)
    tenant = uuid.uuid4()
    async with running_worker(runner):
        handle = await runner.schedule_job("generate-invoice", {"cycle": "c-1"}, tenant=tenant)
        info = await runner.wait_for_job(handle.job_id, tenant=tenant, timeout=30)
    assert info.status is JobStatus.COMPLETED
    assert info.result == {"pdf": "invoice-c-1", "n": [1, 2.5, None, True]}
    assert info.progress == 100
    assert info.attempts == 1 and info.error is None
    assert info.started_at is not None and info.completed_at is not None
    assert info.completed_at >= info.started_at
    (ctx,) = seen
    assert (ctx.job_id, ctx.name, ctx.tenant, ctx.attempt) == (
        handle.job_id,
        "generate-invoice",
        tenant,
        1,
    )
    attempts = await details(runner, handle.job_id, "attempt")
    assert [(r["status"], r["retry_count"]) for r in attempts] == [("completed", 1)]


async def test_none_result_and_sync_handler(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    threads: list[str] = []

    def sync_handler(ctx: Any, data: dict[str, Any]) -> int:
        threads.append(threading.current_thread().name)
        return data["x"] * 2

    async def none_handler(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("sync", sync_handler)
    registry.add("none", none_handler)
    async with running_worker(runner):
        a = await runner.schedule_job("sync", {"x": 21})
        b = await runner.schedule_job("none", {})
        ia = await runner.wait_for_job(a.job_id, timeout=30)
        ib = await runner.wait_for_job(b.job_id, timeout=30)
    assert ia.status is JobStatus.COMPLETED and ia.result == 42
    assert threads and threads[0] != threading.main_thread().name
    assert ib.status is JobStatus.COMPLETED and ib.result is None


async def test_backoff_delays_are_exact_and_status_never_flaps(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """Delays 30 s then 60 s (policy, jitter neutral); run_at - failure time equals them
    exactly; status goes processing -> retrying ... -> failed, never failed before the end."""
    await install_status_log(runner)
    policy = RetryPolicy(
        max_attempts=3, initial_interval=30, backoff_coefficient=2.0, max_interval=300, jitter=0.2
    )

    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    registry.add("flaky", handler, retry=policy)
    async with running_worker(runner, **HALF):
        handle = await runner.schedule_job("flaky", {})
        for attempt, expected in ((1, 30.0), (2, 60.0)):
            row, delay = await failed_at(runner, handle.job_id, attempt)
            assert delay == expected
            assert row["attempts"] == attempt
            info = await runner.get_job_status(handle.job_id)
            assert info is not None
            assert info.status is JobStatus.RETRYING
            assert info.attempts == attempt
            assert info.error is not None and info.error.message == f"boom {attempt}"
            assert info.error.type == "ValueError"
            assert info.run_at == row["run_at"]
            assert info.completed_at is None
            attempt_row = (await details(runner, handle.job_id, "attempt"))[-1]
            assert attempt_row["status"] == "failed" and attempt_row["retry_count"] == attempt
            assert attempt_row["result"]["message"] == f"boom {attempt}"
            await fast_forward(runner, handle.job_id)
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.FAILED
    assert info.attempts == 3
    assert info.error is not None
    assert info.error.type == "ValueError" and info.error.message == "boom 3"
    assert info.error.traceback is not None
    assert "in handler" in info.error.traceback and "ValueError: boom 3" in info.error.traceback
    assert info.completed_at is not None
    assert await status_history(runner, handle.job_id) == [
        "queued",
        "processing",
        "retrying",
        "processing",
        "retrying",
        "processing",
        "failed",
    ]
    attempts = await details(runner, handle.job_id, "attempt")
    assert [(r["status"], r["retry_count"]) for r in attempts] == [
        ("failed", 1),
        ("failed", 2),
        ("failed", 3),
    ]


async def test_retry_then_success(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> None:
    attempts_seen: list[int] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        attempts_seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("transient")
        return "done"

    registry.add(
        "eventually",
        handler,
        retry=RetryPolicy(max_attempts=5, initial_interval=0.05, max_interval=0.1),
    )
    async with running_worker(runner, **HALF):
        handle = await runner.schedule_job("eventually", {})
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert attempts_seen == [1, 2, 3]
    assert info.status is JobStatus.COMPLETED and info.result == "done"
    assert info.attempts == 3 and info.error is None
    rows = await details(runner, handle.job_id, "attempt")
    assert [(r["status"], r["retry_count"]) for r in rows] == [
        ("failed", 1),
        ("failed", 2),
        ("completed", 3),
    ]
    # each failed attempt row records when the next attempt was due
    assert all("next_run_at" in r["metadata"] for r in rows[:2])


async def test_retry_delay_from_handler(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            raise Retry(delay=timedelta(seconds=45), reason="rate limited")
        return ctx.attempt

    registry.add("polite", handler, retry=RetryPolicy(initial_interval=1, max_interval=2))
    async with running_worker(runner, **HALF):
        handle = await runner.schedule_job("polite", {})
        row, delay = await failed_at(runner, handle.job_id)
        assert delay == 45.0
        assert row["error"]["message"] == "rate limited"
        await fast_forward(runner, handle.job_id)
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED and info.result == 2


async def test_non_retryable_fails_now(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def explicit(ctx: JobContext, data: dict[str, Any]) -> None:
        try:
            raise KeyError("missing")
        except KeyError as exc:
            raise NonRetryable("customer does not exist") from exc

    async def by_type(ctx: JobContext, data: dict[str, Any]) -> None:
        raise KeyError("k")

    async def by_name(ctx: JobContext, data: dict[str, Any]) -> None:
        raise CustomError("named")

    async def other(ctx: JobContext, data: dict[str, Any]) -> None:
        raise ValueError("retried")

    policy = RetryPolicy(
        max_attempts=3, initial_interval=30, non_retryable_errors=[KeyError, "CustomError"]
    )
    for name, fn in (
        ("explicit", explicit),
        ("by-type", by_type),
        ("by-name", by_name),
        ("other", other),
    ):
        registry.add(name, fn, retry=policy)
    async with running_worker(runner, **HALF):
        handles = {
            n: await runner.schedule_job(n, {}) for n in ("explicit", "by-type", "by-name", "other")
        }
        for name in ("explicit", "by-type", "by-name"):
            info = await runner.wait_for_job(handles[name].job_id, timeout=30)
            assert info.status is JobStatus.FAILED, name
            assert info.attempts == 1, name
        _row, delay = await failed_at(runner, handles["other"].job_id)
        assert delay == 30.0
    explicit_info = await runner.get_job_status(handles["explicit"].job_id)
    assert explicit_info is not None and explicit_info.error is not None
    assert explicit_info.error.type == "jobrunner._errors.NonRetryable"
    assert explicit_info.error.message == "customer does not exist"
    assert "KeyError" in (explicit_info.error.traceback or "")


async def test_async_timeout_cancels_and_retries(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    cancelled = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        if ctx.attempt == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return "second time lucky"

    registry.add(
        "slow", handler, timeout=0.3, retry=RetryPolicy(max_attempts=2, initial_interval=0.05)
    )
    async with running_worker(runner, **HALF):
        handle = await runner.schedule_job("slow", {})
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert cancelled.is_set()
    assert info.status is JobStatus.COMPLETED and info.attempts == 2
    first = (await details(runner, handle.job_id, "attempt"))[0]
    assert first["status"] == "failed"
    assert first["result"]["type"] == "jobrunner._errors.JobTimeoutError"
    assert "timeout of 0.3 s" in first["result"]["message"]


async def test_async_timeout_final_failure(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    registry.add("hang", handler, timeout=0.2, retry=RetryPolicy(max_attempts=1))
    async with running_worker(runner):
        handle = await runner.schedule_job("hang", {})
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.FAILED and info.attempts == 1
    assert info.error is not None and info.error.type == "jobrunner._errors.JobTimeoutError"


async def test_sync_timeout_flags_cancel_and_discards_late_result(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """A sync handler cannot be interrupted: at its timeout the attempt fails with
    ``JobTimeoutError`` (and follows the retry policy), ``ctx.is_cancelled()`` turns True so a
    cooperative handler can stop, and whatever the thread returns later is discarded: the
    result, progress and completion of the timed-out attempt are never recorded."""
    saw_cancel = threading.Event()
    returned = threading.Event()

    def handler(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
        try:
            deadline = time.monotonic() + 30
            while not ctx.is_cancelled() and time.monotonic() < deadline:
                time.sleep(0.01)
            if ctx.is_cancelled():
                saw_cancel.set()
            ctx.set_progress(77, "too late")
            return {"late": True}
        finally:
            returned.set()

    registry.add("sync-overrun", handler, timeout=0.3, retry=RetryPolicy(max_attempts=1))
    async with running_worker(runner):
        handle = await runner.schedule_job("sync-overrun", {})
        info = await runner.wait_for_job(handle.job_id, timeout=30)
        assert await asyncio.to_thread(returned.wait, 30)
    assert saw_cancel.is_set()
    assert info.status is JobStatus.FAILED
    assert info.error is not None and info.error.type == "jobrunner._errors.JobTimeoutError"
    final = await runner.get_job_status(handle.job_id)
    assert final is not None
    assert final.status is JobStatus.FAILED
    assert final.result is None
    assert final.progress != 77 and final.progress_message != "too late"
    attempts = await details(runner, handle.job_id, "attempt")
    assert [r["status"] for r in attempts] == ["failed"]


async def test_two_workers_never_share_an_attempt(
    make_runner: Any, registry: JobHandlerRegistry
) -> None:
    ledger: list[tuple[uuid.UUID, int, str]] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        ledger.append((ctx.job_id, ctx.attempt, data["w"]))
        await asyncio.sleep(0.005)
        return int(data["i"])

    registry.add("shared", handler)
    one = await make_runner()
    two = await make_runner()

    def tagged(tag: str) -> Any:
        async def wrapped(ctx: JobContext, data: dict[str, Any]) -> int:
            return await handler(ctx, {**data, "w": tag})

        return wrapped

    # Same registry, but each worker's handler records which worker ran the attempt.
    reg_a, reg_b = JobHandlerRegistry(), JobHandlerRegistry()
    reg_a.add("shared", tagged("a"))
    reg_b.add("shared", tagged("b"))
    one.registry, two.registry = reg_a, reg_b
    async with (
        running_worker(one, concurrency=8, claim_batch=4),
        running_worker(two, concurrency=8, claim_batch=4),
    ):
        handles = await one.schedule_jobs("shared", [{"i": i} for i in range(300)])
        infos = await asyncio.gather(*(one.wait_for_job(h.job_id, timeout=120) for h in handles))
    assert all(i.status is JobStatus.COMPLETED for i in infos)
    assert [i.result for i in infos] == list(range(300))
    keys = [(job_id, attempt) for job_id, attempt, _ in ledger]
    assert len(keys) == len(set(keys)) == 300
    assert {attempt for _, attempt, _ in ledger} == {1}
    by_worker = {w: sum(1 for *_, x in ledger if x == w) for w in ("a", "b")}
    assert by_worker["a"] > 0 and by_worker["b"] > 0, by_worker
    rows = await fetch(
        one,
        "SELECT job_id, count(*) AS n FROM {schema}.job_details "
        "WHERE step_name = 'attempt' GROUP BY job_id",
    )
    assert len(rows) == 300 and {r["n"] for r in rows} == {1}


async def test_survives_terminated_connections(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    """pg_terminate_backend on every connection of the worker (pool and LISTEN) mid-job: the
    running job's outcome is still written and later jobs are still claimed."""
    app = f"jrt-reconnect-{uuid.uuid4().hex[:8]}"
    dsn = psycopg.conninfo.make_conninfo(jobrunner_dsn, application_name=app)
    runner = PostgresJobRunner(dsn, schema=schema, registry=registry, pool_size=4)
    await runner.start()
    gate = asyncio.Event()
    started = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        if data.get("wait"):
            started.set()
            await gate.wait()
        return int(data["n"])

    registry.add("resilient", handler)

    async def kill_connections() -> int:
        async with await psycopg.AsyncConnection.connect(jobrunner_dsn, autocommit=True) as c:
            cur = await c.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (app,),
            )
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    try:
        async with running_worker(runner, poll_interval=1.0, lease_seconds=10) as worker:
            first = await runner.schedule_job("resilient", {"n": 1, "wait": True})
            await asyncio.wait_for(started.wait(), 30)
            killed = await kill_connections()
            assert killed >= 2  # at least the LISTEN connection and a pooled one
            gate.set()
            info = await runner.wait_for_job(first.job_id, timeout=60)
            assert info.status is JobStatus.COMPLETED and info.result == 1
            assert info.attempts == 1
            await kill_connections()
            later = [await runner.schedule_job("resilient", {"n": n}) for n in range(2, 6)]
            infos = [await runner.wait_for_job(h.job_id, timeout=60) for h in later]
            assert [i.result for i in infos] == [2, 3, 4, 5]
            assert worker.started.is_set()
    finally:
        await runner.close()


async def test_banner_is_logged(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("banner-a", handler)
    registry.add("banner-b", handler, queue="mail")
    caplog.set_level(logging.INFO, logger="jobrunner")
    async with running_worker(runner, concurrency=3):
        pass
    banners = [
        r.getMessage()
        for r in caplog.records
        if r.name == "jobrunner.worker" and "starting" in r.getMessage()
    ]
    assert len(banners) == 1
    text = banners[0]
    assert "backend=postgres" in text
    assert f"schema={runner.schema}" in text
    assert "queues=default,mail" in text
    assert "concurrency=3" in text
    assert "handlers=[banner-a, banner-b]" in text
    assert "database=" in text and "@" in text


async def test_banner_hides_password(
    jobrunner_dsn: str,
    schema: str,
    registry: JobHandlerRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = psycopg.conninfo.make_conninfo(jobrunner_dsn, password="s3cret-pw")
    runner = PostgresJobRunner(dsn, schema=schema, registry=registry, pool_size=2)
    caplog.set_level(logging.INFO, logger="jobrunner")
    try:
        async with running_worker(runner):
            pass
    finally:
        await runner.close()
    assert "s3cret-pw" not in caplog.text
    assert any("backend=postgres" in r.getMessage() for r in caplog.records)


async def test_unstorable_results_and_errors_do_not_block_the_worker(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """NUL characters and lone surrogates cannot be stored by jsonb. Such a result fails its
    job without retry; such an error message is escaped; neither blocks other outcomes."""

    async def nul_result(ctx: JobContext, data: dict[str, Any]) -> str:
        return "a\x00b"

    async def surrogate_result(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return {"text": "\ud800"}

    async def set_result(ctx: JobContext, data: dict[str, Any]) -> Any:
        return {1, 2}

    async def nul_error(ctx: JobContext, data: dict[str, Any]) -> None:
        raise ValueError("bad \x00 byte and \udcff surrogate")

    async def good(ctx: JobContext, data: dict[str, Any]) -> int:
        return int(data["n"])

    one_try = RetryPolicy(max_attempts=1)
    for name, fn in (
        ("nul-result", nul_result),
        ("surrogate-result", surrogate_result),
        ("set-result", set_result),
        ("nul-error", nul_error),
    ):
        registry.add(
            name,
            fn,
            retry=RetryPolicy(max_attempts=3, initial_interval=0.05)
            if name != "nul-error"
            else one_try,
        )
    registry.add("good", good)
    async with running_worker(runner, flush_interval=0.2):  # batch outcomes together
        bad = {
            n: await runner.schedule_job(n, {})
            for n in ("nul-result", "surrogate-result", "set-result", "nul-error")
        }
        goods = [await runner.schedule_job("good", {"n": n}) for n in range(5)]
        infos = {n: await runner.wait_for_job(h.job_id, timeout=30) for n, h in bad.items()}
        good_infos = [await runner.wait_for_job(h.job_id, timeout=30) for h in goods]
    assert [i.result for i in good_infos] == [0, 1, 2, 3, 4]
    for name in ("nul-result", "surrogate-result", "set-result"):
        info = infos[name]
        assert info.status is JobStatus.FAILED, name
        assert info.attempts == 1, name  # not retried: the same result would be refused again
        assert info.result is None
        assert info.error is not None and info.error.type == "jobrunner._errors.NonRetryable"
    assert "NUL" in infos["nul-result"].error.message  # type: ignore[union-attr]
    assert "lone surrogate" in infos["surrogate-result"].error.message  # type: ignore[union-attr]
    err = infos["nul-error"].error
    assert infos["nul-error"].status is JobStatus.FAILED and err is not None
    assert err.message == "bad \\x00 byte and \\udcff surrogate"


async def test_running_job_keeps_its_lease_by_heartbeat(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """A job running for several lease periods is not rescued while its worker is alive."""
    gate = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        await gate.wait()
        return ctx.attempt

    registry.add("long-lease", handler)
    async with running_worker(runner, lease_seconds=0.6, rescue_interval=0.1):
        handle = await runner.schedule_job("long-lease", {})
        first = await eventually(
            lambda: job_row(runner, handle.job_id),
            lambda r: r["status"] == "processing",
            what="processing",
        )
        seen = {first["lease_expires_at"]}
        # watch the lease being extended several times (well past the first expiry)
        while len(seen) < 5:
            row = await eventually(
                lambda: job_row(runner, handle.job_id),
                lambda r: r["lease_expires_at"] not in seen,
                what="lease extended",
            )
            assert row["status"] == "processing" and row["attempts"] == 1
            seen.add(row["lease_expires_at"])
        gate.set()
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED and info.result == 1 and info.attempts == 1
    assert [r["status"] for r in await details(runner, handle.job_id, "attempt")] == ["completed"]


async def test_lost_lease_stops_the_handler(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """When the heartbeat finds that another claim took the job over (token moved on), the
    handler is stopped and its outcome can no longer be written."""
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "unreachable"

    registry.add("usurped", handler)
    async with running_worker(runner, lease_seconds=1.5):
        handle = await runner.schedule_job("usurped", {})
        await asyncio.wait_for(started.wait(), 30)
        # Simulate a rescue + re-claim by another worker: new token and owner.
        await fetch(
            runner,
            "UPDATE {schema}.jobs SET lease_token = lease_token + 1, "
            "worker_id = gen_random_uuid() WHERE job_id = %s",
            handle.job_id,
        )
        await asyncio.wait_for(stopped.wait(), 30)
        row = await job_row(runner, handle.job_id)
        assert row["status"] == "processing" and row["result"] is None  # untouched by the loser
        assert await details(runner, handle.job_id, "attempt") == []
        assert await runner.cancel_job(handle.job_id)  # end the simulated owner's attempt


async def test_dead_workers_job_is_rescued_and_final_when_out_of_attempts(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """Jobs claimed by a worker that vanished (claimed with a short lease, never heartbeated)
    are re-queued after the lease and count the attempt; with none left they fail."""
    ran: list[tuple[str, int]] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        ran.append((data["k"], ctx.attempt))
        return data["k"]

    registry.add("orphan", handler, retry=RetryPolicy(max_attempts=2))
    again = await runner.schedule_job("orphan", {"k": "again"})
    last = await runner.schedule_job("orphan", {"k": "last"})
    # the "last" job already used its first attempt
    await fetch(runner, "UPDATE {schema}.jobs SET attempts = 1 WHERE job_id = %s", last.job_id)
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            runner.db.queries.claim_jobs,
            {
                "queues": ["default"],
                "limit": 10,
                "worker_id": uuid.uuid4(),
                "lease_seconds": 0.5,
                # FlowGate's: fair, the flow_state version of a fresh schema (0011), no state
                "fair": True,
                "version": 1,
                "vclock": 0.0,
                "pass_tenants": [],
                "pass_values": [],
            },
        )
        assert len(await cur.fetchall()) == 2
    async with running_worker(runner, lease_seconds=2):
        info = await runner.wait_for_job(again.job_id, timeout=30)
        lost = await runner.wait_for_job(last.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED and info.attempts == 2
    assert ran == [("again", 2)]
    assert lost.status is JobStatus.FAILED and lost.attempts == 2
    assert lost.error is not None and lost.error.type == "jobrunner.LeaseExpired"


async def test_shutdown_waits_for_an_outcome_write_in_flight(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """The final flush at shutdown must not cancel a batch the flush loop is still writing."""

    async def handler(ctx: JobContext, data: dict[str, Any]) -> str:
        return "kept"

    registry.add("in-flight", handler)
    worker = runner.create_worker()
    entered, release = asyncio.Event(), asyncio.Event()
    original_write, original_flush = worker._write_outcomes, worker._flush

    async def gated_write(batch: Any) -> None:
        entered.set()
        await release.wait()
        await original_write(batch)

    async def flush_spy() -> None:
        if entered.is_set():
            release.set()  # shutdown's final flush has begun: let the loop's write go on
        await original_flush()

    worker._write_outcomes = gated_write  # type: ignore[method-assign]
    worker._flush = flush_spy  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    try:
        handle = await runner.schedule_job("in-flight", {})
        await asyncio.wait_for(entered.wait(), 30)
        await worker.stop(grace=5)
        await asyncio.wait_for(task, 30)
    finally:
        release.set()
        if not task.done():
            await worker.stop(grace=0)
            await task
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.COMPLETED and info.result == "kept"


async def test_database_outage_loses_nothing(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry, runner: PostgresJobRunner
) -> None:
    """The worker's only route to PostgreSQL is cut (as in a server restart) while a job runs
    and another is scheduled; when the route is back both complete, each in one attempt."""
    from apps.proxy import TcpProxy

    params = psycopg.conninfo.conninfo_to_dict(jobrunner_dsn)
    proxy = TcpProxy(str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))
    await proxy.up()
    via_proxy = psycopg.conninfo.make_conninfo(
        jobrunner_dsn, host="127.0.0.1", port=proxy.port, connect_timeout=3
    )
    cut = PostgresJobRunner(via_proxy, schema=schema, registry=registry, pool_size=3)
    await cut.start()
    gate, finished = asyncio.Event(), asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        if data.get("wait"):
            await gate.wait()
            finished.set()
        return int(data["n"])

    registry.add("outage", handler)
    try:
        async with running_worker(cut, lease_seconds=20, poll_interval=1.0, grace=10):
            running = await runner.schedule_job("outage", {"n": 1, "wait": True})
            await eventually(
                lambda: job_row(runner, running.job_id),
                lambda r: r["status"] == "processing",
                what="processing",
            )
            await proxy.down()
            gate.set()
            await asyncio.wait_for(finished.wait(), 30)  # finished while the database is away
            assert await asyncio.wait_for(cut.is_healthy(), 30) is False
            queued = await runner.schedule_job("outage", {"n": 2})  # via the direct route
            await proxy.up()
            first = await runner.wait_for_job(running.job_id, timeout=60)
            second = await runner.wait_for_job(queued.job_id, timeout=60)
            assert await cut.is_healthy() is True
    finally:
        await cut.close()
        await proxy.down()
    assert (first.status, first.result, first.attempts) == (JobStatus.COMPLETED, 1, 1)
    assert (second.status, second.result, second.attempts) == (JobStatus.COMPLETED, 2, 1)


async def test_stop_while_database_is_away_is_bounded(
    jobrunner_dsn: str,
    schema: str,
    registry: JobHandlerRegistry,
    runner: PostgresJobRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping a worker whose last outcome cannot be written (database away) returns after a
    bounded wait instead of hanging; the job is not lost: its lease expires and it runs again."""
    from apps.proxy import TcpProxy
    from jobrunner._queue import _worker

    monkeypatch.setattr(_worker, "_FINAL_WRITES_TIMEOUT", 1.0)
    params = psycopg.conninfo.conninfo_to_dict(jobrunner_dsn)
    proxy = TcpProxy(str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))
    await proxy.up()
    via_proxy = psycopg.conninfo.make_conninfo(
        jobrunner_dsn, host="127.0.0.1", port=proxy.port, connect_timeout=3
    )
    cut = PostgresJobRunner(via_proxy, schema=schema, registry=registry, pool_size=2)
    await cut.start()
    gate, finished = asyncio.Event(), asyncio.Event()

    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            await gate.wait()
            finished.set()
        return ctx.attempt

    registry.add("stranded", handler)
    worker = cut.create_worker(lease_seconds=2)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.started.wait(), 30)
        handle = await runner.schedule_job("stranded", {})
        await eventually(
            lambda: job_row(runner, handle.job_id),
            lambda r: r["status"] == "processing",
            what="processing",
        )
        await proxy.down()
        gate.set()
        await asyncio.wait_for(finished.wait(), 30)
        await worker.stop(grace=1)
        await asyncio.wait_for(task, 60)
    finally:
        if not task.done():
            task.cancel()
        await cut.close()
        await proxy.down()
    async with running_worker(runner, lease_seconds=2):
        info = await runner.wait_for_job(handle.job_id, timeout=60)
    assert info.status is JobStatus.COMPLETED and info.result == 2 and info.attempts == 2


async def test_retry_state_survives_a_worker_restart(
    runner: PostgresJobRunner, make_runner: Any, registry: JobHandlerRegistry
) -> None:
    """A retry waits in PostgreSQL, not in the worker: a new worker process (here: a new
    runner and worker) picks up attempt 2 with the first attempt's error kept meanwhile."""
    attempts: list[int] = []

    async def handler(ctx: JobContext, data: dict[str, Any]) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise TimeoutError("upstream slow")
        return ctx.attempt

    registry.add("durable", handler, retry=RetryPolicy(initial_interval=60, max_interval=60))
    async with running_worker(runner, **HALF):
        handle = await runner.schedule_job("durable", {})
        _row, delay = await failed_at(runner, handle.job_id)
        assert delay == 60.0
    fresh = await make_runner()
    waiting = await fresh.get_job_status(handle.job_id)
    assert waiting is not None and waiting.status is JobStatus.RETRYING
    assert waiting.error is not None and waiting.error.message == "upstream slow"
    await fast_forward(fresh, handle.job_id)
    async with running_worker(fresh):
        info = await fresh.wait_for_job(handle.job_id, timeout=30)
    assert attempts == [1, 2]
    assert info.status is JobStatus.COMPLETED and info.result == 2 and info.attempts == 2


async def test_retry_with_huge_delay_is_stored(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """A Retry asking for an absurd delay is refused where it is raised (InvalidArgumentError,
    bounded like every interval): the attempt fails with that error and the policy's backoff
    applies, so the next run time is always valid."""

    async def handler(ctx: JobContext, data: dict[str, Any]) -> None:
        raise Retry(delay=1e300)

    registry.add("far-future", handler)
    async with running_worker(runner, **HALF):
        handle = await runner.schedule_job("far-future", {})
        row, delay = await failed_at(runner, handle.job_id)
    assert 0 < delay <= RetryPolicy().max_seconds
    assert row["error"]["type"].endswith("InvalidArgumentError")
    assert "Retry delay" in row["error"]["message"]
