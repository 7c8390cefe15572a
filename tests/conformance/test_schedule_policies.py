"""Conformance: what a recurring schedule does when its scheduler looks late (missed ticks,
catch-up) and when its previous run is still live (overlap), the same on every backend
(docs/howto/recurring.md, "Missed ticks" and "Overlapping runs").

Each test moves the backend's clock with ``Backend.jump``: time passes with no scheduler
running, then one scheduler pass fires what is due.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from jobrunner import JobContext, JobStatus, NonRetryable, ScheduledJob

from .conftest import Backend

pytestmark = pytest.mark.requires("time_travel")

HOUR = timedelta(hours=1)


async def _ticks(backend: Backend) -> list[datetime]:
    """Register ``tick``; the returned list receives each run's ``scheduled_for``."""
    fired: list[datetime] = []

    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        fired.append(datetime.fromisoformat(ctx.metadata["scheduled_for"]))

    backend.registry.add("tick", tick)
    return fired


async def _schedule(backend: Backend, **options: Any) -> tuple[ScheduledJob, datetime]:
    """An hourly schedule, and its first tick."""
    handle = await backend.runner.schedule_recurring_job("tick", {}, "1 hours", **options)
    [info] = await backend.runner.list_schedules()
    assert info.next_run_at is not None
    return handle, info.next_run_at


async def _runs(backend: Backend, schedule: ScheduledJob) -> list[Any]:
    """The jobs the schedule fired (not its tracker), oldest first."""
    page = await backend.runner.list_jobs(name="tick", limit=500)
    runs = [j for j in page.jobs if j.schedule_id == schedule.job_id]
    return sorted(runs, key=lambda j: j.created_at or datetime.min)


async def _skipped(backend: Backend, schedule: ScheduledJob) -> int:
    tracker = await backend.runner.get_job_status(schedule.job_id)
    assert tracker is not None
    return int(tracker.metadata.get("skipped_ticks") or 0)


# -- missed ticks -----------------------------------------------------------------------------
async def test_latest_runs_once_for_the_latest_missed_tick(backend: Backend) -> None:
    fired = await _ticks(backend)
    schedule, first = await _schedule(backend)
    await backend.jump(5 * HOUR + timedelta(minutes=30))
    await backend.settle()
    assert fired == [first + 4 * HOUR]  # ticks first .. first+4h were due; only the latest ran
    assert await _skipped(backend, schedule) == 4
    [info] = await backend.runner.list_schedules()
    assert info.next_run_at == first + 5 * HOUR  # back on the grid, in the future
    assert info.last_run_status is JobStatus.COMPLETED


async def test_skip_runs_none_of_the_missed_ticks(backend: Backend) -> None:
    fired = await _ticks(backend)
    schedule, first = await _schedule(backend, missed_ticks="skip")
    await backend.jump(3 * HOUR + timedelta(minutes=30))
    await backend.settle()
    assert fired == []
    assert await _skipped(backend, schedule) == 3
    [info] = await backend.runner.list_schedules()
    assert info.next_run_at == first + 3 * HOUR
    # The present is first + 2h30 (the schedule began an hour before its first tick): seen 30 s
    # after its time, the next tick is on time and runs.
    await backend.jump(timedelta(minutes=30, seconds=30))
    await backend.settle()
    assert fired == [first + 3 * HOUR]


async def test_a_tick_less_late_than_the_grace_is_on_time(backend: Backend) -> None:
    """A tick seen less than 60 s after its time is not missed, even under ``skip``."""
    fired = await _ticks(backend)
    _, first = await _schedule(backend, missed_ticks="skip")
    await backend.jump(first - datetime.now(first.tzinfo) + timedelta(seconds=30))
    await backend.settle()
    assert fired == [first]


async def test_all_catches_up_at_most_max_catch_up_ticks_oldest_first(backend: Backend) -> None:
    fired = await _ticks(backend)
    schedule, first = await _schedule(backend, missed_ticks="all", max_catch_up=3)
    await backend.jump(5 * HOUR + timedelta(minutes=30))
    await backend.settle()
    assert sorted(fired) == [first + 2 * HOUR, first + 3 * HOUR, first + 4 * HOUR]
    assert [r.status for r in await _runs(backend, schedule)] == [JobStatus.COMPLETED] * 3
    assert await _skipped(backend, schedule) == 2


async def test_all_runs_every_missed_tick_within_the_default_catch_up(backend: Backend) -> None:
    fired = await _ticks(backend)
    _, first = await _schedule(backend, missed_ticks="all")
    await backend.jump(3 * HOUR + timedelta(minutes=30))
    await backend.settle()
    assert sorted(fired) == [first, first + HOUR, first + 2 * HOUR]


# -- overlap ----------------------------------------------------------------------------------
async def test_overlap_skip_skips_a_tick_while_the_previous_run_is_live(backend: Backend) -> None:
    fired = await _ticks(backend)
    schedule, first = await _schedule(backend, overlap="skip")
    await backend.jump(HOUR)  # the first tick fires; its run is not run yet (live)
    assert len(await _runs(backend, schedule)) == 1
    await backend.jump(HOUR)  # the second tick finds that run live: skipped
    assert len(await _runs(backend, schedule)) == 1
    assert await _skipped(backend, schedule) == 1
    await backend.settle()
    assert fired == [first]
    await backend.jump(HOUR)  # nothing live any more: the third tick fires
    await backend.settle()
    assert fired == [first, first + 2 * HOUR]


async def test_overlap_allow_starts_a_run_while_the_previous_is_live(backend: Backend) -> None:
    fired = await _ticks(backend)
    schedule, first = await _schedule(backend)  # overlap="allow" is the default
    await backend.jump(HOUR)
    await backend.jump(HOUR)
    runs = await _runs(backend, schedule)
    assert len(runs) == 2
    assert all(not r.status.is_final for r in runs)  # both live at once
    await backend.settle()
    assert sorted(fired) == [first, first + HOUR]


async def test_overlap_skip_turns_a_catch_up_into_its_latest_tick(backend: Backend) -> None:
    fired = await _ticks(backend)
    _, first = await _schedule(backend, missed_ticks="all", overlap="skip")
    await backend.jump(3 * HOUR + timedelta(minutes=30))
    await backend.settle()
    assert fired == [first + 2 * HOUR]


# -- depends_on_previous ----------------------------------------------------------------------
async def test_depends_on_previous_waits_for_the_previous_run(backend: Backend) -> None:
    fired = await _ticks(backend)
    schedule, first = await _schedule(backend, depends_on_previous=True)
    await backend.jump(HOUR)  # the first tick fires; its run is not run yet (live)
    await backend.jump(HOUR)  # the second tick's run waits for it
    runs = await _runs(backend, schedule)
    assert [r.status for r in runs][1:] == [JobStatus.WAITING]
    details = await backend.runner.get_job_details(runs[1].job_id)
    assert details is not None and [d.job_id for d in details.dependencies] == [runs[0].job_id]
    await backend.settle()
    assert fired == [first, first + HOUR]
    await backend.jump(HOUR)  # the previous run is final: the third runs at once
    runs = await _runs(backend, schedule)
    assert runs[-1].status is not JobStatus.WAITING
    await backend.settle()
    assert fired == [first, first + HOUR, first + 2 * HOUR]


async def test_depends_on_previous_chains_a_catch_up(backend: Backend) -> None:
    order: list[datetime] = []
    calls: list[int] = []

    async def tick(ctx: JobContext, data: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise NonRetryable("the first run fails; the next ones run anyway")
        order.append(datetime.fromisoformat(ctx.metadata["scheduled_for"]))

    backend.registry.add("tick", tick)
    schedule, first = await _schedule(backend, missed_ticks="all", depends_on_previous=True)
    await backend.jump(3 * HOUR + timedelta(minutes=30))  # three ticks, fired together
    runs = sorted(await _runs(backend, schedule), key=lambda r: r.run_at)
    assert [r.status for r in runs][1:] == [JobStatus.WAITING] * 2
    await backend.settle()
    infos = [await backend.runner.get_job_status(r.job_id) for r in runs]
    assert [i.status for i in infos if i is not None] == [
        JobStatus.FAILED,
        JobStatus.COMPLETED,
        JobStatus.COMPLETED,
    ]
    assert order == [first + HOUR, first + 2 * HOUR]
