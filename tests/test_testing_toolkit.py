"""The public testing toolkit: InMemoryJobRunner specifics, FakeClock, drain/adrain on both
backends, assert_enqueued, run_handler and the pytest plugin's fixtures.

Behaviour shared with the other backends is covered by tests/conformance/.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import psycopg
import pytest

from jobrunner import (
    JobContext,
    JobHandlerRegistry,
    JobRunnerFactory,
    JobStatus,
    MissedTickPolicy,
    NonRetryable,
    OverlapPolicy,
    RetryPolicy,
    SyncJobContext,
    SyncJobRunner,
)
from jobrunner._config import Settings
from jobrunner._errors import InvalidArgumentError
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import (
    DrainError,
    FakeClock,
    InMemoryJobRunner,
    SystemClock,
    adrain,
    arun_handler,
    assert_enqueued,
    assert_not_enqueued,
    drain,
    run_handler,
    running_worker,
)

pytest_plugins = ["pytester"]

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def jobrunner_registry(registry: JobHandlerRegistry) -> JobHandlerRegistry:
    """The plugin's runners use this test's fresh registry."""
    return registry


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def mem(registry: JobHandlerRegistry, clock: FakeClock) -> InMemoryJobRunner:
    return InMemoryJobRunner(registry, clock=clock, rand=lambda: 0.5)


# -- FakeClock --------------------------------------------------------------------------------
def test_fake_clock_moves_only_forward() -> None:
    clock = FakeClock(T0)
    assert clock.now() == T0
    assert clock.advance(minutes=5, seconds=30) == T0 + timedelta(minutes=5, seconds=30)
    assert clock.advance(timedelta(hours=1)) == T0 + timedelta(hours=1, minutes=5, seconds=30)
    with pytest.raises(InvalidArgumentError):
        clock.advance(-1)
    with pytest.raises(InvalidArgumentError):
        clock.set(T0)
    with pytest.raises(InvalidArgumentError):
        FakeClock(datetime(2030, 1, 1))  # naive
    seen: list[int] = []
    unsubscribe = clock.subscribe(lambda: seen.append(1))
    clock.advance(1)
    unsubscribe()
    clock.advance(1)
    assert seen == [1]


# -- the in-memory runner ---------------------------------------------------------------------
async def test_retries_wait_for_their_backoff_on_the_clock(
    mem: InMemoryJobRunner, clock: FakeClock, registry: JobHandlerRegistry
) -> None:
    async def flaky(ctx: JobContext, data: dict[str, Any]) -> int:
        if ctx.attempt < 3:
            raise ConnectionError("down")
        return ctx.attempt

    policy = RetryPolicy(max_attempts=3, initial_interval=10, max_interval=100, jitter=0)
    registry.add("flaky", flaky, retry=policy)
    handle = await mem.schedule_job("flaky")
    assert await mem.run_next()
    info = await mem.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.RETRYING
    assert info.run_at == T0 + timedelta(seconds=10)
    assert not await mem.run_next()  # not due yet
    clock.advance(10)
    assert await mem.run_next()
    info = await mem.get_job_status(handle.job_id)
    assert info is not None
    assert info.run_at == T0 + timedelta(seconds=30)  # 10 s, then 20 s
    assert await adrain(mem) == 1  # jumps the clock over the last backoff
    assert clock.now() == T0 + timedelta(seconds=30)
    done = await mem.get_job_status(handle.job_id)
    assert done is not None
    assert done.status is JobStatus.COMPLETED
    assert done.result == 3


async def test_eager_runs_jobs_inside_schedule_job(registry: JobHandlerRegistry) -> None:
    calls: list[int] = []

    async def flaky(ctx: JobContext, data: dict[str, Any]) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("once")
        return "ok"

    registry.add("flaky", flaky, retry=RetryPolicy(max_attempts=2, jitter=0))
    runner = InMemoryJobRunner(registry, eager=True, clock=FakeClock(T0))
    handle = await runner.schedule_job("flaky")
    assert calls == [1, 2]
    info = await runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.COMPLETED
    later = await runner.schedule_job_at("flaky", {}, T0 + timedelta(hours=1))
    pending = await runner.get_job_status(later.job_id)
    assert pending is not None
    assert pending.status is JobStatus.PENDING  # eager runs what is due, not the future


async def test_drain_until_runs_future_jobs_and_every_tick_in_order(
    mem: InMemoryJobRunner, clock: FakeClock, registry: JobHandlerRegistry
) -> None:
    seen: list[tuple[str, datetime]] = []

    async def note(ctx: JobContext, data: dict[str, Any]) -> None:
        seen.append((data["what"], clock.now()))

    registry.add("note", note)
    await mem.schedule_recurring_job("note", {"what": "tick"}, "15 minutes")
    await mem.schedule_job_at("note", {"what": "once"}, T0 + timedelta(minutes=20))
    ran = await adrain(mem, until=timedelta(hours=1))
    assert ran == 5
    assert clock.now() == T0 + timedelta(hours=1)
    assert seen == [
        ("tick", T0 + timedelta(minutes=15)),
        ("once", T0 + timedelta(minutes=20)),
        ("tick", T0 + timedelta(minutes=30)),
        ("tick", T0 + timedelta(minutes=45)),
        ("tick", T0 + timedelta(minutes=60)),
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(MissedTickPolicy.ALL, 4), (MissedTickPolicy.LATEST, 1), (MissedTickPolicy.SKIP, 0)],
)
async def test_missed_ticks_follow_the_policy(
    mem: InMemoryJobRunner,
    clock: FakeClock,
    registry: JobHandlerRegistry,
    policy: MissedTickPolicy,
    expected: int,
) -> None:
    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("tick", tick)
    await mem.schedule_recurring_job("tick", {}, "10 minutes", missed_ticks=policy)
    clock.advance(minutes=45)  # ticks at 10, 20, 30, 40 passed while nothing ran
    fired = mem.fire_due_schedules()
    assert len(fired) == expected
    [info] = await mem.list_schedules()
    assert info.next_run_at == T0 + timedelta(minutes=50)


async def test_overlap_skip_waits_for_the_previous_run(
    mem: InMemoryJobRunner, clock: FakeClock, registry: JobHandlerRegistry
) -> None:
    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    registry.add("tick", tick)
    await mem.schedule_recurring_job("tick", {}, "1 minute", overlap=OverlapPolicy.SKIP)
    clock.advance(minutes=1)
    assert len(mem.fire_due_schedules()) == 1
    clock.advance(minutes=1)
    assert mem.fire_due_schedules() == []  # the first run is still queued
    await adrain(mem)
    clock.advance(minutes=1)
    assert len(mem.fire_due_schedules()) == 1


async def test_drain_stops_a_runaway_job(
    mem: InMemoryJobRunner, registry: JobHandlerRegistry
) -> None:
    async def again(ctx: JobContext, data: dict[str, Any]) -> None:
        await mem.schedule_job("again")

    registry.add("again", again)
    await mem.schedule_job("again")
    with pytest.raises(DrainError, match="more than 20 attempts"):
        await adrain(mem, max_attempts=20)


async def test_drain_times_out_on_a_hanging_handler(
    mem: InMemoryJobRunner, registry: JobHandlerRegistry
) -> None:
    async def hang(ctx: JobContext, data: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    registry.add("hang", hang)
    handle = await mem.schedule_job("hang")
    with pytest.raises(TimeoutError, match=str(handle.job_id)):
        await adrain(mem, timeout=0.3)


def test_drain_from_sync_code(mem: InMemoryJobRunner, registry: JobHandlerRegistry) -> None:
    def add(ctx: SyncJobContext, data: dict[str, Any]) -> int:
        return int(data["a"]) + int(data["b"])

    registry.add("add", add)
    sync = SyncJobRunner(mem)
    try:
        handle = sync.schedule_job("add", {"a": 1, "b": 2})
        assert drain(sync) == 1
        info = sync.get_job_status(handle.job_id)
        assert info is not None
        assert info.result == 3
    finally:
        sync.close()


async def test_drain_refuses_to_block_a_running_loop(mem: InMemoryJobRunner) -> None:
    with pytest.raises(InvalidArgumentError, match="await adrain"):
        drain(mem)


async def test_a_memory_worker_wakes_when_the_clock_moves(
    mem: InMemoryJobRunner, clock: FakeClock, registry: JobHandlerRegistry
) -> None:
    async def noop(ctx: JobContext, data: dict[str, Any]) -> str:
        return "ran"

    registry.add("noop", noop)
    async with running_worker(mem):
        handle = await mem.schedule_job_at("noop", {}, T0 + timedelta(hours=1))
        waiting = asyncio.create_task(mem.wait_for_job(handle.job_id, timeout=30))
        await asyncio.sleep(0)
        assert not waiting.done()
        clock.advance(hours=1)
        info = await waiting
    assert info.result == "ran"


async def test_a_memory_worker_on_the_system_clock_runs_jobs_when_due(
    registry: JobHandlerRegistry,
) -> None:
    async def noop(ctx: JobContext, data: dict[str, Any]) -> str:
        return "ran"

    registry.add("noop", noop)
    runner = InMemoryJobRunner(registry, clock=SystemClock())
    async with running_worker(runner):
        handle = await runner.schedule_job_at(
            "noop", {}, datetime.now(UTC) + timedelta(seconds=0.2)
        )
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED


async def test_stopping_a_worker_hands_running_jobs_back(
    mem: InMemoryJobRunner, registry: JobHandlerRegistry
) -> None:
    started = asyncio.Event()

    async def slow(ctx: JobContext, data: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(60)

    registry.add("slow", slow)
    handle = await mem.schedule_job("slow")
    async with running_worker(mem, grace=0.1):
        await asyncio.wait_for(started.wait(), 30)
    info = await mem.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.QUEUED
    assert info.attempts == 0


async def test_memory_runner_refuses_a_connection_and_unknown_worker_options(
    mem: InMemoryJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("noop", lambda ctx, data: None)
    with pytest.raises(InvalidArgumentError, match="no database"):
        await mem.schedule_job("noop", {}, connection=object())
    with pytest.raises(InvalidArgumentError, match="lease_seconds"):
        mem.create_worker(lease_seconds=5)


async def test_the_factory_builds_a_memory_runner(registry: JobHandlerRegistry) -> None:
    runner = await JobRunnerFactory.create(
        Settings.from_env({"JOB_RUNNER_TYPE": "memory"}), registry=registry
    )
    try:
        assert isinstance(runner, InMemoryJobRunner)
        assert runner.get_runner_type() == "memory"
    finally:
        await runner.close()


async def test_memory_monitoring_filters_metrics_and_history(
    mem: InMemoryJobRunner, clock: FakeClock, registry: JobHandlerRegistry
) -> None:
    async def work(ctx: JobContext, data: dict[str, Any]) -> None:
        if data.get("fail"):
            raise NonRetryable("bad order 42")

    registry.add("work", work)
    ok = await mem.schedule_job("work", {})
    bad = await mem.schedule_job("work", {"fail": True})
    waiting = await mem.schedule_job("work", {})
    await mem.run_next()
    await mem.run_next()
    clock.advance(minutes=5)
    page = await mem.list_jobs(status=["failed"])
    assert [j.job_id for j in page.jobs] == [bad.job_id]
    assert [j.job_id for j in (await mem.list_jobs(search="order 42")).jobs] == [bad.job_id]
    assert (await mem.list_jobs(runner_type="postgres")).jobs == []
    with pytest.raises(InvalidArgumentError):
        await mem.list_jobs(cursor="not-a-cursor")
    metrics = await mem.get_metrics()
    assert metrics.by_status["completed"] == 1
    assert metrics.by_status["failed"] == 1
    assert metrics.by_status["queued"] == 1
    assert metrics.success_rate == 0.5
    assert metrics.oldest_queued_age_seconds == 300.0
    assert await mem.clear_history(older_than=timedelta(hours=1)) == 0
    assert await mem.clear_history() == 1  # completed only
    assert await mem.get_job_status(ok.job_id) is None
    assert await mem.clear_history(scope="all") == 1  # the failed one; never a live job
    assert await mem.get_job_status(waiting.job_id) is not None


# -- drain on PostgreSQL ----------------------------------------------------------------------
async def test_postgres_drain_runs_retries_chains_and_other_queues_now(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def flaky(ctx: JobContext, data: dict[str, Any]) -> int:
        if ctx.attempt < 2:
            raise ConnectionError("down")
        await runner.schedule_job("child", {"parent": ctx.attempt}, queue="elsewhere")
        return ctx.attempt

    async def child(ctx: JobContext, data: dict[str, Any]) -> str:
        return f"child of {data['parent']}"

    # An hour of backoff: only drain's "make waiting retries due now" finishes this quickly.
    policy = RetryPolicy(max_attempts=2, initial_interval=3600, max_interval=3600)
    registry.add("flaky", flaky, retry=policy)
    registry.add("child", child)
    handle = await runner.schedule_job("flaky")
    later = await runner.schedule_job_at(
        "child", {"parent": 0}, datetime.now(UTC) + timedelta(days=1)
    )
    ran = await adrain(runner)
    assert ran == 3
    info = await runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.status is JobStatus.COMPLETED
    [kid] = assert_enqueued(runner, "child", {"parent": 2}, status="completed")
    kid_info = await runner.get_job_status(kid.job_id)
    assert kid_info is not None
    assert kid_info.queue == "elsewhere"
    assert kid_info.result == "child of 2"
    still = await runner.get_job_status(later.job_id)
    assert still is not None
    assert still.status is JobStatus.PENDING
    assert await adrain(runner, until=timedelta(days=2)) == 1
    done = await runner.get_job_status(later.job_id)
    assert done is not None
    assert done.status is JobStatus.COMPLETED


async def test_postgres_drain_fires_each_schedule_tick_up_to_until(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    runs: list[str] = []

    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        runs.append(str(ctx.metadata.get("scheduled_for")))

    registry.add("tick", tick)
    await runner.schedule_recurring_job("tick", {}, "20 minutes")
    assert await adrain(runner) == 0
    assert await adrain(runner, until=timedelta(hours=1, minutes=1)) == 3
    assert len(set(runs)) == 3


def test_postgres_drain_through_a_sync_runner(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    registry.add("double", lambda ctx, data: data["n"] * 2)
    sync = SyncJobRunner(PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry))
    try:
        handles = sync.schedule_jobs("double", [{"n": 1}, {"n": 2}])
        assert drain(sync) == 2
        assert [sync.get_job_status(h.job_id).result for h in handles] == [2, 4]  # type: ignore[union-attr]
    finally:
        sync.close()


# -- assertions -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "postgres"])
async def test_assert_enqueued_matches_name_data_tenant_and_status(
    kind: str, runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    target = InMemoryJobRunner(registry) if kind == "memory" else runner
    registry.add("email", lambda ctx, data: None)
    registry.add("sms", lambda ctx, data: None)
    tenant = uuid.uuid4()
    await target.schedule_job("email", {"to": "a@example.com", "n": 1}, tenant=tenant)
    await target.schedule_job("email", {"to": "b@example.com", "n": 2}, tenant=tenant)
    await target.schedule_recurring_job("sms", {}, "1 hour", tenant=tenant)

    [job] = assert_enqueued(target, "email", {"to": "a@example.com", "n": 1}, tenant=tenant)
    assert job.status is JobStatus.QUEUED
    assert job.tenant == tenant
    assert_enqueued(target, "email", {"to": mock.ANY, "n": 2}, tenant=tenant)
    assert_enqueued(target, "email", tenant=tenant, count=2)
    assert_enqueued(target, "email", tenant=tenant, status=["queued", "pending"], count=2)
    assert_not_enqueued(target, "email")  # the system tenant has none
    assert_not_enqueued(target, "sms", tenant=tenant)  # a schedule's tracker is not a job
    assert_not_enqueued(target, "email", {"to": "c@example.com"}, tenant=tenant)
    with pytest.raises(AssertionError, match=r"expected a job 'email' with data .*c@example\.com"):
        assert_enqueued(target, "email", {"to": "c@example.com"}, tenant=tenant)
    with pytest.raises(AssertionError, match="found 2"):
        assert_not_enqueued(target, "email", tenant=tenant)
    with pytest.raises(AssertionError, match="job names there: email"):
        assert_enqueued(target, "push", tenant=tenant)
    with pytest.raises(InvalidArgumentError):
        assert_enqueued(target, "email", status="bogus")


# -- run_handler ------------------------------------------------------------------------------
async def test_arun_handler_records_every_progress_report_and_step(
    registry: JobHandlerRegistry,
) -> None:
    async def import_rows(ctx: JobContext, data: dict[str, Any]) -> int:
        for pct in (10, 20, 30):
            await ctx.set_progress(pct, f"at {pct}")
        async with ctx.step("load") as step:
            step.result = {"rows": data["rows"]}
        try:
            async with ctx.step("validate"):
                raise ValueError("row 2 is bad")
        except ValueError:
            pass
        return ctx.attempt

    registry.add("import-rows", import_rows)
    run = await arun_handler("import-rows", {"rows": 3}, registry=registry, attempt=2)
    assert run.result == 2
    assert run.progress == [(10, "at 10"), (20, "at 20"), (30, "at 30")]
    assert run.last_progress == 30
    assert run.step_names == ["load", "validate"]
    assert run.steps[0].status == "completed"
    assert run.steps[0].result == {"rows": 3}
    assert run.steps[1].status == "failed"
    assert run.steps[1].error is not None
    assert run.steps[1].error["message"] == "row 2 is bad"


async def test_arun_handler_raises_or_records_errors(registry: JobHandlerRegistry) -> None:
    async def boom(ctx: JobContext, data: dict[str, Any]) -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await arun_handler(boom, registry=registry)
    run = await arun_handler(boom, registry=registry, raises=False)
    assert isinstance(run.error, KeyError)
    assert run.result is None


def test_run_handler_with_a_sync_handler_and_a_cancelled_context() -> None:
    def poll(ctx: SyncJobContext, data: dict[str, Any]) -> str:
        ctx.set_progress(5)
        return "stopped early" if ctx.is_cancelled() else "ran"

    run = run_handler(poll, {}, tenant=uuid.UUID(int=7))
    assert run.result == "ran"
    assert run.progress == [(5, None)]
    assert run.ctx is not None
    assert run.ctx.tenant == uuid.UUID(int=7)
    cancelled = run_handler(poll, {}, cancelled=True)
    assert cancelled.result == "stopped early"
    assert cancelled.progress == []  # as on a real backend: a cancelled attempt reports nothing


async def test_run_handler_refuses_to_block_a_running_loop() -> None:
    with pytest.raises(InvalidArgumentError, match="await arun_handler"):
        run_handler(lambda ctx, data: None)


# -- the pytest plugin ------------------------------------------------------------------------
def test_memory_runner_fixture_uses_the_registry_fixture(
    memory_runner: InMemoryJobRunner, registry: JobHandlerRegistry
) -> None:
    assert memory_runner.registry is registry
    assert isinstance(memory_runner.clock, FakeClock)


async def test_job_runner_fixture_gives_a_started_runner_in_its_own_schema(
    job_runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    registry.add("noop", lambda ctx, data: "ok")
    assert job_runner.registry is registry
    handle = await job_runner.schedule_job("noop")
    await adrain(job_runner)
    info = await job_runner.get_job_status(handle.job_id)
    assert info is not None
    assert info.result == "ok"


def test_job_runner_fixture_drops_its_schema_afterwards(
    pytester: pytest.Pytester, jobrunner_dsn: str
) -> None:
    record = pytester.path / "schema.txt"
    pytester.makepyfile(
        textwrap.dedent(
            f"""
            import pathlib

            async def test_uses_a_schema(job_runner):
                pathlib.Path({str(record)!r}).write_text(job_runner.schema)
                assert await job_runner.is_healthy()
                raise RuntimeError("the test fails; cleanup must still happen")
            """
        )
    )
    result = pytester.runpytest_inprocess(
        # In process, Django may already be set up by tests/contrib in this session.
        "-p",
        "no:django",
        "-p",
        "asyncio",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        f"--jobrunner-dsn={jobrunner_dsn}",
    )
    result.assert_outcomes(failed=1)
    schema = record.read_text()
    with psycopg.connect(jobrunner_dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    assert row == (0,)


def test_temporal_env_without_the_extra_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import sys\nsys.modules['temporalio'] = None\n")
    pytester.makepyfile("def test_needs_temporal(temporal_env):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    assert "temporal_env: the Temporal extra is not installed" in result.stdout.str()
    assert "pip install 'jobrunner-pg[temporal]'" in result.stdout.str()
