"""Recurring schedules on PostgreSQL: API semantics, firing with an injected clock, DST,
missed-tick and overlap policies, racing schedulers, and real workers firing on time."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from jobrunner import (
    HandlerNotFoundError,
    InvalidArgumentError,
    JobContext,
    JobHandlerRegistry,
    JobStatus,
    MissedTickPolicy,
    OverlapPolicy,
    ScheduleError,
)
from jobrunner._jobargs import recurring_args
from jobrunner._queue._ticker import ScheduleTicker
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._schedule_ticks import fire_due
from jobrunner.compat import JobScheduler
from jobrunner.testing import running_worker

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
#: schedule_recurring_job's defaults, for schedules created with an injected clock.
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "tenant": None,
    "timezone": "UTC",
    "singleton_key": None,
    "missed_ticks": "latest",
    "overlap": "allow",
    "max_catch_up": 10,
    "priority": 0,
    "queue": None,
    "user_id": None,
    "metadata": None,
}


async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
    return None


@pytest.fixture
def reg(registry: JobHandlerRegistry) -> JobHandlerRegistry:
    registry.add("tick", noop)
    registry.add("other", noop)
    return registry


async def rows(runner: PostgresJobRunner, query: str, *params: Any) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(
        runner.db.conninfo, autocommit=True, row_factory=dict_row
    ) as conn:
        text = sql.SQL(query).format(s=sql.Identifier(runner.schema))
        cur = await conn.execute(text, params)
        return await cur.fetchall()


async def runs_of(runner: PostgresJobRunner, schedule_id: uuid.UUID) -> list[dict[str, Any]]:
    return await rows(
        runner,
        "SELECT job_id, type, status::text AS status, data, scheduled_for, run_at, created_at, "
        "schedule_id, metadata, queue, priority FROM {s}.jobs WHERE schedule_id = %s "
        "ORDER BY scheduled_for",
        schedule_id,
    )


async def counts(runner: PostgresJobRunner) -> tuple[int, int]:
    jobs = await rows(runner, "SELECT count(*) AS n FROM {s}.jobs")
    scheds = await rows(runner, "SELECT count(*) AS n FROM {s}.schedules")
    return jobs[0]["n"], scheds[0]["n"]


async def fire(runner: PostgresJobRunner, now: datetime, **kw: Any) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(runner.db.conninfo, autocommit=True) as c:
        return await fire_due(c, runner.schema, now, **kw)


async def create(runner: PostgresJobRunner, expr: str, now: datetime = T0, **kw: Any) -> uuid.UUID:
    kw.setdefault("name", "tick")
    name = kw.pop("name")
    data = kw.pop("data", {})
    options = {**SCHEDULE_DEFAULTS, **kw}
    args = recurring_args(runner.registry, runner.require_registered, name, data, expr, **options)
    handle = await runner.schedule_store.save_schedule(args, now=now)
    return handle.job_id


# -- the API -------------------------------------------------------------------------------
async def test_create_returns_tracker_row(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    tenant = uuid.uuid4()
    handle = await runner.schedule_recurring_job(
        "tick",
        {"days": 30},
        "0 0 * * *",
        tenant=tenant,
        timezone="Europe/Berlin",
        metadata={"owner": "ops"},
    )
    assert handle.created and handle.tenant == tenant
    assert handle.external_id == str(handle.job_id)
    info = await runner.get_job_status(handle.job_id, tenant=tenant)
    assert info is not None
    assert info.status is JobStatus.ACTIVE and info.name == "tick"
    meta = info.metadata
    assert meta["recurring"] is True and meta["owner"] == "ops"
    assert meta["expression"] == "0 0 * * *" and meta["timezone"] == "Europe/Berlin"
    assert meta["paused"] is False and meta["last_run_at"] is None
    assert meta["last_run_status"] is None
    next_run = datetime.fromisoformat(meta["next_run_at"])
    assert next_run > datetime.now(UTC)
    assert next_run.astimezone(ZoneInfo("Europe/Berlin")).hour == 0
    [listed] = await runner.list_schedules(tenant=tenant)
    assert listed.job_id == handle.job_id and listed.name == "tick"
    assert listed.singleton_key == f"tick:{tenant}"
    assert listed.data == {"days": 30} and listed.next_run_at == next_run
    assert listed.missed_ticks is MissedTickPolicy.LATEST
    assert listed.overlap is OverlapPolicy.ALLOW
    assert listed.runner_type == "postgres" and listed.paused is False
    # Other tenants see nothing.
    assert await runner.list_schedules(tenant=uuid.uuid4()) == []
    assert await runner.list_schedules() == []


async def test_update_in_place(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    tenant = uuid.uuid4()
    first = await runner.schedule_recurring_job("tick", {"v": 1}, "0 0 * * *", tenant=tenant)
    [before] = await runner.list_schedules(tenant=tenant)
    again = await runner.schedule_recurring_job("tick", {"v": 2}, "0 0 * * *", tenant=tenant)
    assert again.job_id == first.job_id and again.created is False
    [same_timing] = await runner.list_schedules(tenant=tenant)
    assert same_timing.data == {"v": 2}
    assert same_timing.next_run_at == before.next_run_at  # timing unchanged: tick kept
    third = await runner.schedule_recurring_job(
        "tick",
        {"v": 3},
        "24 hours",
        tenant=tenant,
        timezone="Asia/Tokyo",
        missed_ticks="all",
        overlap="skip",
        max_catch_up=3,
        priority=5,
        queue="q2",
    )
    assert third.job_id == first.job_id and third.created is False
    [after] = await runner.list_schedules(tenant=tenant)
    assert (after.expression, after.timezone, after.data) == ("24 hours", "Asia/Tokyo", {"v": 3})
    assert after.missed_ticks is MissedTickPolicy.ALL and after.overlap is OverlapPolicy.SKIP
    info = await runner.get_job_status(first.job_id, tenant=tenant)
    assert info is not None and info.metadata["expression"] == "24 hours"
    assert info.queue == "q2" and info.priority == 5
    trackers = await rows(runner, "SELECT job_id FROM {s}.jobs WHERE tenant = %s", tenant)
    assert [r["job_id"] for r in trackers] == [first.job_id]  # never a second tracker row
    version = await rows(runner, "SELECT version FROM {s}.schedules")
    assert version == [{"version": 3}]


async def test_concurrent_creates_make_one_schedule(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    handles = await asyncio.gather(
        *(runner.schedule_recurring_job("tick", {"n": n}, "5 minutes") for n in range(8))
    )
    assert len({h.job_id for h in handles}) == 1
    assert sum(h.created for h in handles) == 1
    assert await counts(runner) == (1, 1)


async def test_singleton_key_identity(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    a = await runner.schedule_recurring_job("tick", {}, "5 minutes", singleton_key="a")
    b = await runner.schedule_recurring_job("tick", {}, "5 minutes", singleton_key="b")
    c = await runner.schedule_recurring_job("other", {}, "5 minutes")
    default = await runner.schedule_recurring_job("tick", {}, "5 minutes")
    assert len({a.job_id, b.job_id, c.job_id, default.job_id}) == 4
    renamed = await runner.schedule_recurring_job("other", {}, "1 hours", singleton_key="a")
    assert renamed.job_id == a.job_id
    listed = {s.singleton_key: s for s in await runner.list_schedules()}
    assert listed["a"].name == "other" and listed["a"].expression == "1 hour"
    assert set(listed) == {"a", "b", f"other:{uuid.UUID(int=0)}", f"tick:{uuid.UUID(int=0)}"}


REJECTED: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception]]] = [
    (("tick", {}, "24 hourz"), {}, ScheduleError),
    (("tick", {}, "0 0 * *"), {}, ScheduleError),
    (("tick", {}, "0 0 31 2 *"), {}, ScheduleError),
    (("tick", {}, "0 0 * * *"), {"timezone": "Europe/Nowhere"}, ScheduleError),
    (("tick", {}, "5 minutes"), {"timezone": ""}, ScheduleError),
    (("tick", {}, "5 minutes"), {"missed_ticks": "some"}, ScheduleError),
    (("tick", {}, "5 minutes"), {"overlap": "queue"}, ScheduleError),
    (("tick", {}, "5 minutes"), {"max_catch_up": 0}, ScheduleError),
    (("tick", {}, 300), {}, ScheduleError),
    (("tick", [], "5 minutes"), {}, InvalidArgumentError),
    (("tick", {}, "5 minutes"), {"tenant": "not-a-uuid"}, InvalidArgumentError),
    (("tick", {}, "5 minutes"), {"priority": 10**6}, InvalidArgumentError),
    (("tick", {}, "5 minutes"), {"singleton_key": ""}, InvalidArgumentError),
    (("tick", {}, "5 minutes"), {"user_id": "x"}, InvalidArgumentError),
    (("tick", {}, "5 minutes"), {"metadata": "x"}, InvalidArgumentError),
    (("", {}, "5 minutes"), {}, InvalidArgumentError),
    (("unknown-job", {}, "5 minutes"), {}, HandlerNotFoundError),
]


async def test_rejected_with_nothing_stored(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    for args, kwargs, error in REJECTED:
        with pytest.raises(error):
            await runner.schedule_recurring_job(*args, **kwargs)
        assert await counts(runner) == (0, 0), (args, kwargs)


async def test_rejected_update_keeps_the_schedule(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    await runner.schedule_recurring_job("tick", {"v": 1}, "5 minutes")
    with pytest.raises(ScheduleError):
        await runner.schedule_recurring_job("tick", {"v": 2}, "5 parsecs")
    [s] = await runner.list_schedules()
    assert (s.expression, s.data) == ("5 minutes", {"v": 1})


async def test_unregistered_allowed_for_producers(
    make_runner: Callable[..., Awaitable[PostgresJobRunner]],
) -> None:
    producer = await make_runner(require_registered=False)
    handle = await producer.schedule_recurring_job("elsewhere", {}, "@hourly")
    assert handle.created


# -- firing with an injected clock ---------------------------------------------------------
async def test_interval_fires_once_per_tick(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    tenant = uuid.uuid4()
    sid = await create(
        runner, "5 minutes", tenant=tenant, data={"x": 1}, priority=3, metadata={"m": True}
    )
    assert await fire(runner, T0 + timedelta(minutes=4)) == []
    [fired] = await fire(runner, T0 + timedelta(minutes=5))
    assert fired.schedule_id == sid and len(fired.jobs) == 1
    assert fired.next_run_at == T0 + timedelta(minutes=10)
    assert await fire(runner, T0 + timedelta(minutes=5)) == []  # already fired
    [run] = await runs_of(runner, sid)
    assert run["scheduled_for"] == T0 + timedelta(minutes=5)
    assert run["type"] == "tick" and run["data"] == {"x": 1} and run["priority"] == 3
    assert run["metadata"]["m"] is True and run["metadata"]["schedule_id"] == str(sid)
    assert run["status"] == "queued"  # T0 is in the past: due at once
    info = await runner.get_job_status(run["job_id"], tenant=tenant)
    assert info is not None and info.schedule_id == sid
    tracker = await runner.get_job_status(sid, tenant=tenant)
    assert tracker is not None and tracker.status is JobStatus.ACTIVE
    assert tracker.metadata["last_job_id"] == str(run["job_id"])
    assert tracker.metadata["last_run_status"] == "queued"
    assert datetime.fromisoformat(tracker.metadata["last_run_at"]) == T0 + timedelta(minutes=5)
    assert datetime.fromisoformat(tracker.metadata["next_run_at"]) == T0 + timedelta(minutes=10)
    [listed] = await runner.list_schedules(tenant=tenant)
    assert listed.last_job_id == run["job_id"] and listed.last_run_status is JobStatus.QUEUED
    # The tracker's last_run_status follows the run (kept by the database).
    assert await runner.cancel_job(run["job_id"], tenant=tenant)
    tracker = await runner.get_job_status(sid, tenant=tenant)
    assert tracker is not None and tracker.metadata["last_run_status"] == "cancelled"
    assert tracker.status is JobStatus.ACTIVE  # the schedule's own status, not its run's


async def test_cron_fires_in_its_timezone(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    await create(runner, "0 9 * * *", timezone="America/New_York")
    nine_ny = datetime(2024, 1, 1, 14, 0, tzinfo=UTC)
    assert await fire(runner, nine_ny - timedelta(seconds=1)) == []
    [fired] = await fire(runner, nine_ny + timedelta(seconds=1))
    assert [t for _, t in fired.jobs] == [nine_ny]
    assert fired.next_run_at == nine_ny + timedelta(days=1)


async def test_dst_gap_in_the_database(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    """Europe/Berlin 2024-03-31: 02:00 does not exist; the job runs once, at 03:00 CEST."""
    sid = await create(
        runner, "0 2 * * *", now=datetime(2024, 3, 30, 12, tzinfo=UTC), timezone="Europe/Berlin"
    )
    moments = [datetime(2024, 3, 31, h, m, tzinfo=UTC) for h in range(0, 6) for m in (0, 30)]
    for now in moments:
        await fire(runner, now + timedelta(seconds=1))
    runs = await runs_of(runner, sid)
    assert [r["scheduled_for"] for r in runs] == [datetime(2024, 3, 31, 1, tzinfo=UTC)]
    [s] = await runner.list_schedules()
    assert s.next_run_at == datetime(2024, 4, 1, 0, tzinfo=UTC)  # 02:00 CEST


async def test_dst_overlap_in_the_database(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    """Europe/Berlin 2024-10-27: 02:00 happens twice; the job runs once."""
    sid = await create(
        runner,
        "0 2 * * *",
        now=datetime(2024, 10, 26, 12, tzinfo=UTC),
        timezone="Europe/Berlin",
        missed_ticks="all",
    )
    for h in range(0, 6):
        for m in (0, 30):
            await fire(
                runner,
                datetime(2024, 10, 26, 22 + h, m, 1, tzinfo=UTC)
                if h < 2
                else datetime(2024, 10, 27, h - 2, m, 1, tzinfo=UTC),
            )
    runs = await runs_of(runner, sid)
    assert [r["scheduled_for"] for r in runs] == [datetime(2024, 10, 27, 0, tzinfo=UTC)]
    [s] = await runner.list_schedules()
    assert s.next_run_at == datetime(2024, 10, 28, 1, tzinfo=UTC)  # 02:00 CET next day


async def test_missed_ticks_latest(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    sid = await create(runner, "5 minutes")
    [fired] = await fire(runner, T0 + timedelta(hours=3, minutes=2))
    assert [t for _, t in fired.jobs] == [T0 + timedelta(hours=3)]
    assert fired.skipped == 35
    assert fired.next_run_at == T0 + timedelta(hours=3, minutes=5)
    assert len(await runs_of(runner, sid)) == 1
    tracker = await runner.get_job_status(sid)
    assert tracker is not None and tracker.metadata["skipped_ticks"] == 35


async def test_missed_ticks_skip(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    sid = await create(runner, "5 minutes", missed_ticks=MissedTickPolicy.SKIP)
    [late] = await fire(runner, T0 + timedelta(hours=3, minutes=2))
    assert late.jobs == [] and late.next_run_at == T0 + timedelta(hours=3, minutes=5)
    # Back on time: the next tick fires.
    [on_time] = await fire(runner, T0 + timedelta(hours=3, minutes=5, seconds=1))
    assert [t for _, t in on_time.jobs] == [T0 + timedelta(hours=3, minutes=5)]
    assert len(await runs_of(runner, sid)) == 1


async def test_missed_ticks_all_bounded(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    sid = await create(runner, "5 minutes", missed_ticks="all", max_catch_up=4)
    [fired] = await fire(runner, T0 + timedelta(hours=1, minutes=1))
    expected = [T0 + timedelta(minutes=m) for m in (45, 50, 55, 60)]
    assert [t for _, t in fired.jobs] == expected
    assert [r["scheduled_for"] for r in await runs_of(runner, sid)] == expected
    small = await create(runner, "5 minutes", name="other", missed_ticks="all")
    [fired_small] = await fire(runner, T0 + timedelta(minutes=16))
    assert fired_small.schedule_id == small
    assert [t for _, t in fired_small.jobs] == [T0 + timedelta(minutes=m) for m in (5, 10, 15)]


async def test_overlap_skip(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    sid = await create(runner, "5 minutes", overlap="skip", missed_ticks="all")
    [first] = await fire(runner, T0 + timedelta(minutes=5))
    assert len(first.jobs) == 1
    # The first run is still queued (live): the next tick is skipped.
    [second] = await fire(runner, T0 + timedelta(minutes=10))
    assert second.jobs == [] and second.skipped == 1
    assert await runner.cancel_job(first.jobs[0][0])
    # Not live any more: the following tick fires; of a catch-up burst only the latest runs.
    [third] = await fire(runner, T0 + timedelta(minutes=25))
    assert [t for _, t in third.jobs] == [T0 + timedelta(minutes=25)]
    assert third.skipped == 2
    assert len(await runs_of(runner, sid)) == 2


async def test_overlap_allow_default(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    sid = await create(runner, "5 minutes")
    await fire(runner, T0 + timedelta(minutes=5))
    await fire(runner, T0 + timedelta(minutes=10))
    assert [r["status"] for r in await runs_of(runner, sid)] == ["queued", "queued"]


async def test_unique_key_blocks_a_second_job_for_a_tick(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    sid = await create(runner, "5 minutes")
    await fire(runner, T0 + timedelta(minutes=5))
    # Even if next_run_at were moved back (by hand, a bug, a restored backup) the tick that
    # already has a job does not get another.
    await rows(
        runner, "UPDATE {s}.schedules SET next_run_at = %s RETURNING 1", T0 + timedelta(minutes=5)
    )
    [again] = await fire(runner, T0 + timedelta(minutes=5))
    assert again.jobs == [] and again.skipped == 1
    assert len(await runs_of(runner, sid)) == 1
    # The tick's record in schedule_ticks (0009) is what refuses a second job for it, even
    # after the first one finished and moved to jobs_finished.
    await rows(
        runner,
        "UPDATE {s}.jobs SET status = 'completed' WHERE schedule_id = %s "
        "AND status <> 'active' RETURNING 1",
        sid,
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        await rows(
            runner,
            "INSERT INTO {s}.schedule_ticks (tenant, schedule_id, scheduled_for, job_id) "
            "SELECT tenant, schedule_id, %s, gen_random_uuid() FROM {s}.schedules "
            "WHERE schedule_id = %s RETURNING 1",
            T0 + timedelta(minutes=5),
            sid,
        )
    await rows(
        runner, "UPDATE {s}.schedules SET next_run_at = %s RETURNING 1", T0 + timedelta(minutes=5)
    )
    [after_finish] = await fire(runner, T0 + timedelta(minutes=5))
    assert after_finish.jobs == [] and len(await runs_of(runner, sid)) == 1


async def test_racing_schedulers_fire_each_tick_once(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    """Six connections fire concurrently, over and over: each (schedule, tick) one job."""
    ids = [
        await create(runner, "1 minute", singleton_key=f"s{n}", missed_ticks="all")
        for n in range(5)
    ]
    ids.append(await create(runner, "*/2 * * * *", singleton_key="cron", missed_ticks="all"))
    conns = [
        await psycopg.AsyncConnection.connect(runner.db.conninfo, autocommit=True) for _ in range(6)
    ]
    try:
        for minute in range(1, 11):
            now = T0 + timedelta(minutes=minute, seconds=1)
            await asyncio.gather(*(fire_due(c, runner.schema, now) for c in conns))
    finally:
        for c in conns:
            await c.close()
    for sid in ids[:5]:
        ticks = [r["scheduled_for"] for r in await runs_of(runner, sid)]
        assert ticks == [T0 + timedelta(minutes=m) for m in range(1, 11)]
    cron_ticks = [r["scheduled_for"] for r in await runs_of(runner, ids[5])]
    assert cron_ticks == [T0 + timedelta(minutes=m) for m in range(2, 11, 2)]


# -- pause, resume, cancel -----------------------------------------------------------------
async def test_pause_and_resume(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    tenant = uuid.uuid4()
    sid = await create(runner, "5 minutes", tenant=tenant)
    assert await runner.pause_schedule(sid, tenant=uuid.uuid4()) is False  # other tenant
    assert await runner.pause_schedule(sid, tenant=tenant) is True
    assert await runner.pause_schedule(sid, tenant=tenant) is True  # idempotent
    [s] = await runner.list_schedules(tenant=tenant)
    assert s.paused and s.next_run_at is None
    tracker = await runner.get_job_status(sid, tenant=tenant)
    assert tracker is not None and tracker.metadata["paused"] is True
    assert await fire(runner, T0 + timedelta(hours=1)) == []
    resume_at = T0 + timedelta(hours=1, minutes=2)
    assert await runner.schedule_store.set_schedule_paused(tenant, sid, paused=False, now=resume_at)
    [s] = await runner.list_schedules(tenant=tenant)
    # From the next future tick; ticks that fell while paused are not caught up.
    assert not s.paused and s.next_run_at == T0 + timedelta(hours=1, minutes=5)
    [fired] = await fire(runner, T0 + timedelta(hours=1, minutes=5))
    assert [t for _, t in fired.jobs] == [T0 + timedelta(hours=1, minutes=5)]
    assert await runner.resume_schedule(sid, tenant=tenant) is True
    assert await runner.resume_schedule(uuid.uuid4(), tenant=tenant) is False
    tracker = await runner.get_job_status(sid, tenant=tenant)
    assert tracker is not None and tracker.metadata["paused"] is False


async def test_update_keeps_pause(runner: PostgresJobRunner, reg: JobHandlerRegistry) -> None:
    handle = await runner.schedule_recurring_job("tick", {}, "5 minutes")
    await runner.pause_schedule(handle.job_id)
    await runner.schedule_recurring_job("tick", {"new": 1}, "10 minutes")
    [s] = await runner.list_schedules()
    assert s.paused and s.expression == "10 minutes"


async def test_cancel_removes_the_schedule(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    tenant = uuid.uuid4()
    sid = await create(runner, "5 minutes", tenant=tenant)
    await fire(runner, T0 + timedelta(minutes=5))
    assert await runner.cancel_job(sid, tenant=uuid.uuid4()) is False
    assert await runner.cancel_job(sid, tenant=tenant, reason="retired") is True
    assert await runner.list_schedules(tenant=tenant) == []
    tracker = await runner.get_job_status(sid, tenant=tenant)
    assert tracker is not None and tracker.status is JobStatus.CANCELLED
    assert tracker.metadata["schedule_removed"] is True
    assert tracker.metadata["cancel_reason"] == "retired"
    assert await fire(runner, T0 + timedelta(hours=1)) == []
    assert len(await runs_of(runner, sid)) == 1  # the run already enqueued stays
    assert await runner.cancel_job(sid, tenant=tenant) is False
    assert await runner.pause_schedule(sid, tenant=tenant) is False
    # The removed schedule's tracker is history: it cannot be retried into a job.
    assert await runner.retry_job(sid, tenant=tenant) is False
    tracker = await runner.get_job_status(sid, tenant=tenant)
    assert tracker is not None
    assert tracker.status is JobStatus.CANCELLED
    # Scheduling the same key again makes a new schedule.
    again = await runner.schedule_recurring_job("tick", {}, "5 minutes", tenant=tenant)
    assert again.created and again.job_id != sid


async def test_legacy_uses_the_real_scheduler(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    legacy = JobScheduler(runner)
    tenant = uuid.uuid4()
    job_id = await legacy.schedule_recurring_job("tick", "0 0 * * *", {"tenant_id": str(tenant)})
    again = await legacy.schedule_recurring_job("tick", "24 hours", {"tenant_id": str(tenant)})
    assert job_id == again
    [s] = await runner.list_schedules(tenant=tenant)
    assert s.expression == "24 hours"  # an interval, not coerced to cron or vice versa
    with pytest.raises(ScheduleError):
        await legacy.schedule_recurring_job("tick", "every day", {})


# -- real workers --------------------------------------------------------------------------
async def test_workers_fire_on_time_exactly_once(
    make_runner: Callable[..., Awaitable[PostgresJobRunner]], reg: JobHandlerRegistry
) -> None:
    """Two workers plus a third scheduler loop race on a 1-second interval: every tick runs
    once, each soon after its tick (a timer woken by NOTIFY, not the 30 s safety poll)."""
    seen: list[tuple[uuid.UUID, datetime]] = []
    enough = asyncio.Event()

    async def beat(ctx: JobContext, data: dict[str, Any]) -> None:
        seen.append((ctx.job_id, datetime.now(UTC)))
        if len(seen) >= 4:
            enough.set()

    reg.add("beat", beat)
    runner_a = await make_runner()
    runner_b = await make_runner()
    extra = ScheduleTicker(runner_b.queue_store())
    extra_task = asyncio.create_task(extra.run())
    try:
        async with (
            running_worker(runner_a, poll_interval=30.0),
            running_worker(runner_b, poll_interval=30.0),
        ):
            await asyncio.wait_for(extra.listening.wait(), 30)
            # Created after the workers started: only the NOTIFY can wake their timers early.
            # missed_ticks="all": a tick that is late on a loaded machine still runs.
            handle = await runner_a.schedule_recurring_job(
                "beat", {}, "1 seconds", missed_ticks="all"
            )
            await asyncio.wait_for(enough.wait(), 60)
            await runner_a.pause_schedule(handle.job_id)
    finally:
        extra_task.cancel()
        await asyncio.gather(extra_task, return_exceptions=True)
    runs = await runs_of(runner_a, handle.job_id)
    ticks = [r["scheduled_for"] for r in runs]
    assert len(ticks) == len(set(ticks)) >= 4
    # One second apart on the grid (no tick twice, none lost between the first and last).
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))
    started = {job_id: at for job_id, at in seen}
    assert len(started) == len(seen)  # each run executed once
    for r in runs:
        # Enqueued close to its tick: far below the 30 s poll (generous for a loaded machine).
        assert r["created_at"].replace(tzinfo=UTC) - r["scheduled_for"] < timedelta(seconds=10)
    last = runs[-1]
    info = await runner_a.wait_for_job(last["job_id"], timeout=30)
    assert info.status is JobStatus.COMPLETED
    tracker = await runner_a.get_job_status(handle.job_id)
    assert tracker is not None
    assert tracker.metadata["last_job_id"] == str(last["job_id"])
    assert tracker.metadata["last_run_status"] == "completed"


async def test_worker_without_scheduler_fires_nothing(
    runner: PostgresJobRunner, reg: JobHandlerRegistry
) -> None:
    handle = await runner.schedule_recurring_job("tick", {}, "1 seconds")
    async with running_worker(runner, run_scheduler=False):
        await asyncio.sleep(1.5)  # nothing to await: the point is that nothing happens
    assert await runs_of(runner, handle.job_id) == []
