"""The queue store contract (jobrunner._queue._store.QueueStore), store by store.

The same scenarios run on the in-memory store and on the PostgreSQL one, through the typed
methods the worker and the schedule ticker use: claim order, lease tokens and fencing, the
attempt budget, heartbeat and release, lease rescue, pinned policies, notifications and
schedule ticks. tests/conformance covers the same rules through the runner API.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import JobContext, JobHandlerRegistry, JobRunner, JobStatus, RetryPolicy
from jobrunner._policy import JobPolicy
from jobrunner._queue._store import (
    AttemptRef,
    CancelRequested,
    ClaimedJob,
    ClaimRequest,
    CompletedAttempt,
    FailedAttempt,
    Notice,
    OutcomeBatch,
    QueueStore,
    Topic,
    WorkAvailable,
)
from jobrunner.backends.memory import InMemoryJobRunner
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import FakeClock, isolated_schema

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
ERROR = json.dumps({"type": "ValueError", "message": "boom", "traceback": None})


async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
    return None


@dataclass
class Kit:
    """A runner and its queue store."""

    runner: JobRunner
    store: QueueStore
    worker_id: uuid.UUID

    async def claim(self, limit: int = 10, *, lease_seconds: float = 30.0) -> list[ClaimedJob]:
        request = ClaimRequest(self.worker_id, ("default",), limit, lease_seconds)
        return (await self.store.claim(request)).jobs

    async def status(self, job: ClaimedJob) -> Any:
        info = await self.runner.get_job_status(job.job_id, tenant=job.tenant)
        assert info is not None
        return info

    async def complete(self, ref: AttemptRef, result: Any = None) -> None:
        done = CompletedAttempt(ref, json.dumps(result), time.time(), 1.0)
        await self.store.record_outcomes(
            OutcomeBatch(completed=[done]), worker_id=self.worker_id, per_statement=100
        )

    async def fail(self, ref: AttemptRef, retry_in: float | None) -> None:
        failed = FailedAttempt(ref, ERROR, retry_in, time.time(), 1.0)
        await self.store.record_outcomes(
            OutcomeBatch(failed=[failed]), worker_id=self.worker_id, per_statement=100
        )


@pytest.fixture(params=["memory", "postgres"])
async def kit(request: pytest.FixtureRequest, registry: JobHandlerRegistry) -> AsyncIterator[Kit]:
    registry.add("work", noop, retry=RetryPolicy(max_attempts=2, jitter=0))
    registry.add("tick", noop)
    if request.param == "memory":
        memory = InMemoryJobRunner(registry, clock=FakeClock(T0))
        yield Kit(memory, memory.store, uuid.uuid4())
        await memory.close()
        return
    dsn: str = request.getfixturevalue("jobrunner_dsn")
    async with isolated_schema(dsn) as schema:
        runner = PostgresJobRunner(dsn, schema=schema, registry=registry, pool_size=4)
        store = runner.queue_store()
        await store.open()  # starts the runner
        try:
            yield Kit(runner, store, uuid.uuid4())
        finally:
            await store.close()
            await runner.close()


async def test_claims_follow_priority_then_due_time(kit: Kit) -> None:
    low = await kit.runner.schedule_job("work", {"n": 1})
    high = await kit.runner.schedule_job("work", {"n": 2}, priority=5)
    second_low = await kit.runner.schedule_job("work", {"n": 3})
    claimed = await kit.claim(2)  # which jobs a claim takes; a batch's own order is free
    assert {c.job_id for c in claimed} == {high.job_id, low.job_id}
    assert [c.attempt for c in claimed] == [1, 1]
    assert all(c.name == "work" and c.queue == "default" for c in claimed)
    [last] = await kit.claim(5)
    assert last.job_id == second_low.job_id and last.data == {"n": 3}
    assert await kit.claim(5) == []
    assert (await kit.status(last)).status is JobStatus.PROCESSING


async def test_one_claim_at_a_time_takes_the_highest_priority_first(kit: Kit) -> None:
    first = await kit.runner.schedule_job("work", {})
    urgent = await kit.runner.schedule_job("work", {}, priority=9)
    then = await kit.runner.schedule_job("work", {})
    order = [(await kit.claim(1))[0].job_id for _ in range(3)]
    assert order == [urgent.job_id, first.job_id, then.job_id]


async def test_every_write_of_an_attempt_is_fenced_by_its_token(kit: Kit) -> None:
    await kit.runner.schedule_job("work", {})
    [job] = await kit.claim()
    stale = AttemptRef(job.tenant, job.job_id, job.lease_token - 1)
    await kit.complete(stale, "stale")
    await kit.store.release([stale])
    assert (await kit.status(job)).status is JobStatus.PROCESSING
    await kit.complete(job.ref, "fresh")
    info = await kit.status(job)
    assert (info.status, info.result) == (JobStatus.COMPLETED, "fresh")
    await kit.fail(job.ref, None)  # the attempt is over: a late failure changes nothing
    assert (await kit.status(job)).status is JobStatus.COMPLETED


async def test_a_retry_is_honoured_only_while_attempts_remain(kit: Kit) -> None:
    await kit.runner.schedule_job("work", {})  # max_attempts=2
    [first] = await kit.claim()
    await kit.fail(first.ref, 0.0)
    assert (await kit.status(first)).status is JobStatus.RETRYING
    [second] = await kit.claim()
    assert second.job_id == first.job_id and second.attempt == 2
    assert second.lease_token > first.lease_token
    await kit.fail(second.ref, 0.0)  # asks for a retry, but the budget is spent
    info = await kit.status(second)
    assert (info.status, info.attempts, info.error.type) == (JobStatus.FAILED, 2, "ValueError")


async def test_heartbeat_lists_held_attempts_and_release_hands_them_back(kit: Kit) -> None:
    await kit.runner.schedule_jobs("work", [{}, {}])
    claimed = await kit.claim()
    held = await kit.store.heartbeat(kit.worker_id, 30.0)
    assert {r.key for r in held} == {c.ref.key for c in claimed}
    assert await kit.store.heartbeat(uuid.uuid4(), 30.0) == []
    await kit.store.release([claimed[0].ref])
    info = await kit.status(claimed[0])
    assert (info.status, info.attempts) == (JobStatus.QUEUED, 0)  # the attempt is not counted
    assert {r.key for r in await kit.store.heartbeat(kit.worker_id, 30.0)} == {claimed[1].ref.key}


async def test_expired_leases_are_rescued(kit: Kit) -> None:
    await kit.runner.schedule_job("work", {})
    [job] = await kit.claim(lease_seconds=0.05)
    deadline = time.monotonic() + 30
    rescued = 0
    while not rescued and time.monotonic() < deadline:  # no event: the lease runs out in time
        await asyncio.sleep(0.05)
        rescued = await kit.store.rescue_expired()
    assert rescued == 1
    info = await kit.status(job)
    assert info.status is JobStatus.RETRYING
    assert info.error is not None and info.error.type == "jobrunner.LeaseExpired"
    await kit.complete(job.ref, "late")  # the dead attempt's outcome is fenced out
    assert (await kit.status(job)).status is JobStatus.RETRYING
    [again] = await kit.claim()
    assert again.attempt == 2


async def test_a_policy_is_pinned_once_to_a_job_without_one(kit: Kit) -> None:
    await kit.runner.schedule_job("work", {})
    [job] = await kit.claim()
    assert job.policy is not None  # the producer had the handler: its policy travels
    assert JobPolicy.from_json(job.policy).retry.max_attempts == 2
    await kit.store.pin_policy(job.ref, JobPolicy(retry=RetryPolicy(max_attempts=7)))
    assert (await kit.status(job)).max_attempts == 2  # a stored policy is never replaced


async def test_listeners_hear_new_work_and_cancels_with_their_fence(kit: Kit) -> None:
    heard: list[Notice] = []
    changed = asyncio.Event()
    ready = asyncio.Event()

    def deliver(notice: Notice) -> None:
        heard.append(notice)
        changed.set()

    listening = asyncio.create_task(
        kit.store.listen(frozenset({Topic.WORK, Topic.CANCELS}), deliver, ready=ready.set)
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        handle = await kit.runner.schedule_job("work", {})
        await _until(changed, lambda: any(isinstance(n, WorkAvailable) for n in heard))
        [job] = await kit.claim()
        assert await kit.runner.cancel_job(handle.job_id)
        await _until(changed, lambda: any(isinstance(n, CancelRequested) for n in heard))
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    [cancel] = [n for n in heard if isinstance(n, CancelRequested)]
    assert cancel.job_id == job.job_id
    assert cancel.stops(job.job_id, job.lease_token)
    assert not cancel.stops(job.job_id, job.lease_token + 1)  # a later retry keeps running


async def test_each_due_tick_fires_exactly_one_job(kit: Kit) -> None:
    handle = await kit.runner.schedule_recurring_job("tick", {}, "1 minute", missed_ticks="all")
    [info] = await kit.runner.list_schedules()
    assert info.next_run_at is not None
    first = info.next_run_at
    now = first + timedelta(minutes=2, seconds=1)  # three ticks due
    fired = await kit.store.fire_due_ticks(now=now, limit=10, grace=timedelta(minutes=5))
    assert [f.schedule_id for f in fired] == [handle.job_id]
    assert [t for _, t in fired[0].jobs] == [first + timedelta(minutes=m) for m in range(3)]
    assert fired[0].next_run_at == first + timedelta(minutes=3)
    assert await kit.store.fire_due_ticks(now=now, limit=10, grace=timedelta(minutes=5)) == []
    ahead = await kit.store.seconds_until_next_tick(now=now)
    assert ahead == pytest.approx(59.0)


async def _until(event: asyncio.Event, check: Callable[[], bool]) -> None:
    while not check():
        event.clear()
        await asyncio.wait_for(event.wait(), 30)
