"""The worker's prefetch (issue 15, fast defaults): one claim serves the free slots plus a
bounded number of held jobs; held jobs are leased and heartbeated, cancellable, handed back
when no slot starts them in time and at shutdown, and never run twice."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from apps.helpers import details, eventually, fetch
from jobrunner import InvalidArgumentError, JobContext, JobHandlerRegistry, JobStatus
from jobrunner._queue._settings import PREFETCH_MAX_WAIT, WorkerSettings
from jobrunner._queue._worker import QueueWorker
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import running_worker


class Gate:
    """Handlers ``warm`` (returns at once) and ``blocked`` (waits for :meth:`open`), counting
    every call per job."""

    def __init__(self, registry: JobHandlerRegistry) -> None:
        self.calls: Counter[uuid.UUID] = Counter()
        self.started = asyncio.Condition()
        self._open = asyncio.Event()
        registry.add("warm", self._warm)
        registry.add("blocked", self._blocked)

    async def _warm(self, ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    async def _blocked(self, ctx: JobContext, data: dict[str, Any]) -> int:
        self.calls[ctx.job_id] += 1
        async with self.started:
            self.started.notify_all()
        await self._open.wait()
        return ctx.attempt

    async def running(self, count: int) -> None:
        """Wait until ``count`` handler calls have started."""
        async with self.started:
            await asyncio.wait_for(
                self.started.wait_for(lambda: sum(self.calls.values()) >= count), 30
            )

    def open(self) -> None:
        self._open.set()


async def warm_up(runner: PostgresJobRunner, worker: QueueWorker) -> None:
    """Run one quick job, so the worker knows its handlers' run time (a new worker holds
    nothing beyond its free slots)."""
    handle = await runner.schedule_job("warm", {})
    info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED  # recorded: the run time is known


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for the worker's own state (no event marks a claim's end)."""

    async def probe() -> bool:
        return predicate()

    await eventually(probe, what=what)


async def leased_to(runner: PostgresJobRunner, worker: QueueWorker) -> int:
    rows = await fetch(
        runner,
        "SELECT count(*) AS n FROM {schema}.jobs WHERE status = 'processing' AND worker_id = %s",
        worker.worker_id,
    )
    return int(rows[0]["n"])


async def statuses(runner: PostgresJobRunner, job_ids: list[uuid.UUID]) -> Counter[str]:
    rows = await fetch(
        runner,
        "SELECT status::text AS status FROM {schema}.jobs WHERE job_id = ANY(%s)",
        job_ids,
    )
    return Counter(r["status"] for r in rows)


async def test_one_claim_fills_the_slots_and_a_bounded_prefetch(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """Concurrency 3, prefetch 4: 3 run, at most 4 more are held (leased to the worker), the
    rest stay queued for other workers; every job runs exactly once."""
    gate = Gate(registry)
    async with running_worker(runner, concurrency=3, prefetch=4) as worker:
        assert isinstance(worker, QueueWorker)
        await warm_up(runner, worker)
        handles = await runner.schedule_jobs("blocked", [{"i": i} for i in range(20)])
        job_ids = [h.job_id for h in handles]
        await gate.running(3)
        await until(lambda: worker.held_jobs > 0, "held jobs")
        assert worker.running_jobs == 3
        assert 0 < worker.held_jobs <= 4
        assert await leased_to(runner, worker) == 3 + worker.held_jobs
        assert (await statuses(runner, job_ids))["queued"] >= 20 - 3 - 4
        gate.open()
        infos = [await runner.wait_for_job(j, timeout=60) for j in job_ids]
    assert all(i.status is JobStatus.COMPLETED for i in infos)
    assert gate.calls == Counter(dict.fromkeys(job_ids, 1))  # none ran twice, none was lost


async def test_held_jobs_are_heartbeated_then_handed_back(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """Held jobs outlive a 0.6 s lease (the heartbeat renews them: nothing is rescued, no
    attempt is counted) and go back to the queue once no slot started them within
    PREFETCH_MAX_WAIT; when the slots free up they run once each."""
    gate = Gate(registry)
    options = {"concurrency": 2, "prefetch": 3, "lease_seconds": 0.6, "rescue_interval": 0.1}
    async with running_worker(runner, **options) as worker:
        assert isinstance(worker, QueueWorker)
        await warm_up(runner, worker)
        handles = await runner.schedule_jobs("blocked", [{"i": i} for i in range(6)])
        job_ids = [h.job_id for h in handles]
        await gate.running(2)
        await until(lambda: worker.held_jobs > 0, "held jobs")
        held_at = asyncio.get_running_loop().time()
        # Handed back: the held ones are queued again and only the running ones stay leased.
        await eventually(
            lambda: leased_to(runner, worker), lambda n: n == 2, what="held jobs handed back"
        )
        assert asyncio.get_running_loop().time() - held_at >= PREFETCH_MAX_WAIT * 0.9
        assert worker.held_jobs == 0
        assert (await statuses(runner, job_ids)) == Counter(processing=2, queued=4)
        gate.open()
        infos = [await runner.wait_for_job(j, timeout=60) for j in job_ids]
    assert all(i.status is JobStatus.COMPLETED and i.attempts == 1 for i in infos)
    assert gate.calls == Counter(dict.fromkeys(job_ids, 1))
    for job_id in job_ids:  # no lease expired on a held job: one attempt row each
        assert [d["status"] for d in await details(runner, job_id, "attempt")] == ["completed"]


async def test_a_cancelled_held_job_never_starts(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    gate = Gate(registry)
    async with running_worker(runner, concurrency=1, prefetch=5) as worker:
        assert isinstance(worker, QueueWorker)
        await warm_up(runner, worker)
        handles = await runner.schedule_jobs("blocked", [{"i": i} for i in range(3)])
        await gate.running(1)
        await until(lambda: worker.held_jobs == 2, "2 held")
        (victim,) = [h.job_id for h in handles if h.job_id not in gate.calls][:1]
        assert await runner.cancel_job(victim)
        await until(lambda: worker.held_jobs == 1, "dropped")
        gate.open()
        others = [h.job_id for h in handles if h.job_id != victim]
        infos = [await runner.wait_for_job(j, timeout=60) for j in others]
    assert all(i.status is JobStatus.COMPLETED for i in infos)
    assert victim not in gate.calls
    assert (await runner.get_job_status(victim)).status is JobStatus.CANCELLED


async def test_shutdown_hands_held_jobs_back_uncounted(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    gate = Gate(registry)
    async with running_worker(runner, concurrency=1, prefetch=5, grace=0) as worker:
        assert isinstance(worker, QueueWorker)
        await warm_up(runner, worker)
        handles = await runner.schedule_jobs("blocked", [{"i": i} for i in range(4)])
        await gate.running(1)
        await until(lambda: worker.held_jobs == 3, "3 held")
    rows = await fetch(
        runner,
        "SELECT status::text AS status, attempts, worker_id FROM {schema}.jobs "
        "WHERE job_id = ANY(%s)",
        [h.job_id for h in handles],
    )
    assert [(r["status"], r["attempts"], r["worker_id"]) for r in rows] == [("queued", 0, None)] * 4
    assert sum(gate.calls.values()) == 1


@pytest.mark.parametrize("limited", [False, True], ids=["prefetch-0", "limited-claim"])
async def test_no_prefetch_when_off_or_when_limits_decide_the_claim(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, limited: bool
) -> None:
    """``prefetch=0`` claims for free slots only; so does a claim that flow control's limits
    decide (a held job would count against its tenant's limit without running)."""
    gate = Gate(registry)
    options: dict[str, Any] = {"concurrency": 2}
    if limited:
        # A limit on another tenant: every claim takes the limited path, ours are not held up.
        await runner.flow.set_concurrency_limit(tenant=uuid.uuid4(), limit=100)
    else:
        options["prefetch"] = 0
    async with running_worker(runner, **options) as worker:
        assert isinstance(worker, QueueWorker)
        await warm_up(runner, worker)
        handles = await runner.schedule_jobs("blocked", [{"i": i} for i in range(6)])
        await gate.running(2)
        # A claim for more would have happened with the one that started these two.
        assert worker.held_jobs == 0
        assert await leased_to(runner, worker) == 2
        gate.open()
        for h in handles:
            await runner.wait_for_job(h.job_id, timeout=60)
    assert sum(gate.calls.values()) == 6


def test_prefetch_setting_bounds() -> None:
    assert WorkerSettings.build().prefetch == 500
    assert WorkerSettings.build(prefetch=0).prefetch == 0
    assert WorkerSettings.build(claim_batch=None).claim_batch is None
    for bad in (-1, 100_001, True, 2.5, "10", None):
        with pytest.raises(InvalidArgumentError, match="prefetch"):
            WorkerSettings.build(prefetch=bad)
