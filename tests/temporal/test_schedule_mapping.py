"""The Temporal schedule mapping: pure functions (ticks, DST, missed-tick policy) and, against
the dev server, tick dedupe, tracker metadata, removed schedules and ``run_scheduler``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import ScheduleBackfill, ScheduleOverlapPolicy

from apps.helpers import eventually, fetch
from jobrunner import JobContext, JobHandlerRegistry, JobStatus
from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._recurrence import parse_recurrence
from jobrunner.backends.temporal import _schedules as s

BERLIN_GAP = datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 02:00 CET does not exist: 03:00 CEST
BERLIN_FALL_BACK_FIRST = datetime(2027, 10, 31, 0, 0, tzinfo=UTC)  # 02:00 CEST
BERLIN_FALL_BACK_SECOND = datetime(2027, 10, 31, 1, 0, tzinfo=UTC)  # 02:00 CET


def test_overlap_second_firing_has_the_first_occurrence_as_key() -> None:
    rec = parse_recurrence("0 2 * * *", "Europe/Berlin")
    pg_tick = rec.next_after(datetime(2027, 10, 30, 12, tzinfo=UTC))
    assert pg_tick == BERLIN_FALL_BACK_FIRST
    # Temporal 1.32 fires this cron at the second occurrence; both map to one key.
    assert s.canonical_tick(BERLIN_FALL_BACK_SECOND, rec) == pg_tick
    assert s.canonical_tick(BERLIN_FALL_BACK_FIRST, rec) == pg_tick
    assert s.is_tick(rec, s.canonical_tick(BERLIN_FALL_BACK_SECOND, rec))
    hourly = parse_recurrence("0 * * * *", "Europe/Berlin")
    assert s.canonical_tick(BERLIN_FALL_BACK_SECOND, hourly) == BERLIN_FALL_BACK_FIRST
    # Intervals are elapsed time: never folded.
    every = parse_recurrence("1 hour", "Europe/Berlin")
    assert s.canonical_tick(BERLIN_FALL_BACK_SECOND, every) == BERLIN_FALL_BACK_SECOND


def test_gap_gets_a_calendar_entry_for_the_shifted_time() -> None:
    rec = parse_recurrence("0 2 * * *", "Europe/Berlin")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    entries = s.dst_gap_calendars(rec, now)
    found = {
        (e.year[0].start, e.month[0].start, e.day_of_month[0].start, e.hour[0].start)
        for e in entries
    }
    assert (2027, 3, 28, 3) in found
    assert len(entries) == s.DST_GAP_YEARS
    # The shifted firing (03:00 CEST = 01:00 UTC) has PostgreSQL's key for that day's tick.
    assert rec.next_after(datetime(2027, 3, 27, 12, tzinfo=UTC)) == BERLIN_GAP
    assert s.canonical_tick(BERLIN_GAP, rec) == BERLIN_GAP
    # Crons whose shifted time is a tick anyway need no entry; UTC has no gaps.
    assert s.dst_gap_calendars(parse_recurrence("0 * * * *", "Europe/Berlin"), now) == []
    assert s.dst_gap_calendars(parse_recurrence("0 2 * * *", "UTC"), now) == []


def test_period_and_catchup_window_follow_the_expression() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert s.cron_period(parse_recurrence("*/5 * * * *"), now) == timedelta(minutes=5)
    assert s.cron_period(parse_recurrence("0 9 * * 1-5"), now) == timedelta(days=3)
    assert s.catchup_window(MissedTickPolicy.LATEST, timedelta(hours=1), 10) == timedelta(hours=1)
    assert s.catchup_window(MissedTickPolicy.ALL, timedelta(hours=1), 3) == timedelta(hours=3)
    assert s.catchup_window(MissedTickPolicy.SKIP, timedelta(hours=1), 3) == timedelta(minutes=1)


def test_interval_offset_puts_the_first_tick_one_interval_after_now() -> None:
    now = datetime(2026, 12, 2, 8, 4, 45, 500000, tzinfo=UTC)
    every = timedelta(minutes=7)
    offset = s.interval_offset_for(every, now)
    grid = int(now.timestamp()) - offset.total_seconds()
    assert grid % every.total_seconds() == 0
    rec = parse_recurrence("7 minutes")
    tick = now.replace(microsecond=0) + every
    assert s.is_tick(rec, tick, int(offset.total_seconds()))
    assert not s.is_tick(rec, tick + timedelta(seconds=1), int(offset.total_seconds()))


@pytest.mark.parametrize(
    ("policy", "overlap", "age_ticks", "late", "expected"),
    [
        (MissedTickPolicy.LATEST, OverlapPolicy.ALLOW, 0, 5, None),
        (MissedTickPolicy.LATEST, OverlapPolicy.ALLOW, 2, 5, "superseded"),
        (MissedTickPolicy.LATEST, OverlapPolicy.SKIP, 2, 5, None),
        (MissedTickPolicy.SKIP, OverlapPolicy.ALLOW, 0, 5, None),
        (MissedTickPolicy.SKIP, OverlapPolicy.ALLOW, 0, 120, "missed"),
        (MissedTickPolicy.ALL, OverlapPolicy.ALLOW, 2, 5, None),
        (MissedTickPolicy.ALL, OverlapPolicy.ALLOW, 3, 5, "beyond max_catch_up"),
    ],
)
def test_tick_decision(
    policy: MissedTickPolicy, overlap: OverlapPolicy, age_ticks: int, late: int, expected: Any
) -> None:
    rec = parse_recurrence("10 minutes")
    tick = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    now = tick + age_ticks * timedelta(minutes=10) + timedelta(seconds=late)
    got = s.tick_decision(rec, tick, now, missed_ticks=policy, overlap=overlap, max_catch_up=3)
    assert got == expected


@pytest.mark.temporal
async def test_duplicate_firing_of_a_tick_runs_once_and_metadata_follows(
    trunner: Any, tworker: Any, registry: JobHandlerRegistry
) -> None:
    seen: list[Any] = []

    async def yearly(ctx: JobContext, data: dict[str, Any]) -> None:
        seen.append(ctx.metadata.get("scheduled_for"))

    registry.add("yearly", yearly)
    tenant = uuid.uuid4()
    made = await trunner.schedule_recurring_job(
        "yearly", {}, "0 0 1 1 *", tenant=tenant, missed_ticks="all", max_catch_up=100
    )
    tracker = await trunner.get_job_status(made.job_id, tenant=tenant)
    meta = tracker.metadata
    assert meta["recurring"] is True and meta["kind"] == "cron"
    assert meta["next_run_at"] is not None and meta["last_run_at"] is None
    handle = trunner.client.get_schedule_handle(made.external_id)
    backfill = ScheduleBackfill(
        start_at=datetime(2020, 1, 1, tzinfo=UTC) - timedelta(seconds=1),
        end_at=datetime(2021, 1, 1, tzinfo=UTC) + timedelta(seconds=1),
        overlap=ScheduleOverlapPolicy.ALLOW_ALL,
    )
    await handle.backfill(backfill)
    runs = await eventually(
        lambda: fetch(
            trunner,
            "SELECT * FROM {schema}.jobs WHERE schedule_id = %s ORDER BY scheduled_for",
            made.job_id,
        ),
        lambda rows: len(rows) == 2 and all(r["status"] == "completed" for r in rows),
        what="two backfilled runs",
    )
    assert [r["scheduled_for"] for r in runs] == [
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2021, 1, 1, tzinfo=UTC),
    ]
    assert runs[0]["metadata"]["schedule_id"] == str(made.job_id)
    assert runs[0]["metadata"]["scheduled_for"] == "2020-01-01T00:00:00+00:00"
    # A run's row is completed before its workflow closes, and Temporal does not start a
    # schedule's workflow again while one with the same id still runs: wait for both to close,
    # so the second firing reaches register_run instead of being dropped by Temporal.
    for run in runs:
        await trunner.client.get_workflow_handle(run["external_id"]).result()
    # The same ticks fired again: the unique tick key makes them no-ops.
    await handle.backfill(backfill)
    tracker = await eventually(
        lambda: trunner.get_job_status(made.job_id, tenant=tenant),
        lambda t: t.metadata.get("skipped_ticks") == 2,
        what="duplicates counted as skipped",
    )
    assert len(seen) == 2
    assert (
        len(await fetch(trunner, "SELECT 1 FROM {schema}.jobs WHERE schedule_id = %s", made.job_id))
        == 2
    )
    meta = tracker.metadata
    assert meta["last_run_at"] == "2021-01-01T00:00:00+00:00"
    assert meta["last_job_id"] == str(runs[1]["job_id"])
    assert meta["last_run_status"] == JobStatus.COMPLETED.value
    assert meta["next_run_at"] is not None


@pytest.mark.temporal
async def test_latest_policy_skips_superseded_runs(
    trunner: Any, tworker: Any, registry: JobHandlerRegistry
) -> None:
    registry.add("stale", lambda ctx, data: None)
    tenant = uuid.uuid4()
    made = await trunner.schedule_recurring_job("stale", {}, "0 0 1 1 *", tenant=tenant)
    handle = trunner.client.get_schedule_handle(made.external_id)
    await handle.backfill(
        ScheduleBackfill(
            start_at=datetime(2020, 1, 1, tzinfo=UTC) - timedelta(seconds=1),
            end_at=datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=1),
            overlap=ScheduleOverlapPolicy.ALLOW_ALL,
        )
    )
    await eventually(
        lambda: trunner.get_job_status(made.job_id, tenant=tenant),
        lambda t: t.metadata.get("skipped_ticks") == 1,
        what="superseded tick skipped",
    )
    assert (
        await fetch(trunner, "SELECT 1 FROM {schema}.jobs WHERE schedule_id = %s", made.job_id)
        == []
    )


@pytest.mark.temporal
async def test_gap_calendar_fires_at_the_shifted_time_on_the_server(trunner: Any) -> None:
    from temporalio.client import Schedule, ScheduleActionStartWorkflow, ScheduleSpec

    rec = parse_recurrence("0 2 * * *", "Europe/Berlin")
    spec = ScheduleSpec(
        cron_expressions=[rec.cron or ""],
        calendars=s.dst_gap_calendars(rec, datetime.now(UTC)),
        time_zone_name="Europe/Berlin",
        start_at=datetime(2027, 3, 27, tzinfo=UTC),
    )
    sid = f"gap-probe-{uuid.uuid4().hex[:8]}"
    handle = await trunner.client.create_schedule(
        sid,
        Schedule(
            action=ScheduleActionStartWorkflow("none", id=sid, task_queue="none"),
            spec=spec,
        ),
    )
    try:
        times = (await handle.describe()).info.next_action_times
        assert BERLIN_GAP in times  # Temporal alone skips 2027-03-28
    finally:
        await handle.delete()


@pytest.mark.temporal
async def test_removed_schedule_cannot_be_retried(
    trunner: Any, registry: JobHandlerRegistry
) -> None:
    registry.add("gone", lambda ctx, data: None)
    tenant = uuid.uuid4()
    made = await trunner.schedule_recurring_job("gone", {}, "5 minutes", tenant=tenant)
    assert await trunner.cancel_job(made.job_id, tenant=tenant, reason="retired") is True
    tracker = await trunner.get_job_status(made.job_id, tenant=tenant)
    assert tracker.metadata["schedule_removed"] is True
    assert tracker.metadata["paused"] is False  # removed, not paused (issue 13)
    assert tracker.metadata["cancel_reason"] == "retired"
    assert await trunner.retry_job(made.job_id, tenant=tenant) is False
    tracker = await trunner.get_job_status(made.job_id, tenant=tenant)
    assert tracker.status is JobStatus.CANCELLED
    with pytest.raises(Exception):  # noqa: B017 - the schedule is gone on Temporal
        await trunner.client.get_schedule_handle(made.external_id).describe()


@pytest.mark.temporal
async def test_interval_first_tick_is_one_interval_after_creation(
    trunner: Any, registry: JobHandlerRegistry
) -> None:
    registry.add("every", lambda ctx, data: None)
    before = datetime.now(UTC)
    made = await trunner.schedule_recurring_job("every", {}, "1 hour", tenant=uuid.uuid4())
    [info] = await trunner.list_schedules(tenant=made.tenant)
    assert info.next_run_at is not None
    assert abs((info.next_run_at - (before + timedelta(hours=1))).total_seconds()) < 3
    await trunner.cancel_job(made.job_id, tenant=made.tenant)


@pytest.mark.temporal
def test_worker_accepts_run_scheduler_false(trunner: Any) -> None:
    worker = trunner.create_worker(run_scheduler=False, concurrency=2)
    assert worker.settings.concurrency == 2
