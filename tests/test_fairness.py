"""Flow control on PostgreSQL, claim by claim: fairness, weights, priorities, limits, API.

These drive the fair claim directly (no worker) so every assertion is about one claim's exact
choice; tests/test_fairness_processes.py proves the same rules across worker processes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from apps.helpers import eventually
from jobrunner import ALL_TENANTS, InvalidArgumentError, SyncJobRunner
from jobrunner._queue._store import ClaimedJob, ClaimRequest, CompletedAttempt, OutcomeBatch
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._flow_gate import BLOCKED_POLL
from jobrunner.testing import running_worker

A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
B = uuid.UUID("00000000-0000-4000-8000-00000000000b")
C = uuid.UUID("00000000-0000-4000-8000-00000000000c")

MakeRunner = Callable[..., Awaitable[PostgresJobRunner]]


@pytest.fixture
async def prunner(make_runner: MakeRunner) -> PostgresJobRunner:
    """A producer-only runner (no handlers needed to enqueue)."""
    return await make_runner(require_registered=False)


async def claim(
    runner: PostgresJobRunner, limit: int, *, force: bool | None = None
) -> list[ClaimedJob]:
    """One claim as a worker's store makes it (``force``: ``WorkerSettings.fair``)."""
    request = ClaimRequest(
        worker_id=uuid.uuid4(),
        queues=("default",),
        limit=limit,
        lease_seconds=30.0,
        fair=force,
    )
    store = runner.queue_store()
    try:
        return (await store.claim(request)).jobs
    finally:
        await store.close()


async def finish(runner: PostgresJobRunner, jobs: list[ClaimedJob]) -> None:
    """Complete claimed jobs (frees their capacity)."""
    batch = OutcomeBatch(completed=[CompletedAttempt(j.ref, None, time.time(), 1.0) for j in jobs])
    await runner.schedule_store.record_outcomes(batch, worker_id=uuid.uuid4(), per_statement=1000)


async def test_round_robin_serves_a_small_tenant_next_to_a_big_backlog(
    prunner: PostgresJobRunner,
) -> None:
    await prunner.schedule_jobs("work", [{"i": i} for i in range(500)], tenant=A)
    await prunner.schedule_jobs("work", [{"i": i} for i in range(6)], tenant=B)
    first = await claim(prunner, 8)
    counts = Counter(r.tenant for r in first)
    assert counts == {A: 4, B: 4}
    second = await claim(prunner, 8)
    assert Counter(r.tenant for r in second) == {A: 6, B: 2}  # B has only 2 left


async def test_with_fair_claiming_off_the_backlog_goes_first(
    prunner: PostgresJobRunner,
) -> None:
    """The baseline the fair claim fixes (and proof the test above can tell the difference):
    off in the database, or off for one worker."""
    await prunner.schedule_jobs("work", [{"i": i} for i in range(50)], tenant=A)
    await prunner.schedule_jobs("work", [{"i": i} for i in range(6)], tenant=B)
    rows = await claim(prunner, 8, force=False)
    assert Counter(r.tenant for r in rows) == {A: 8}
    await prunner.flow.set_fair_claiming(False)
    rows = await claim(prunner, 8)
    assert Counter(r.tenant for r in rows) == {A: 8}
    assert Counter(r.tenant for r in await claim(prunner, 8, force=True)) == {A: 4, B: 4}
    await prunner.flow.set_fair_claiming(True)
    assert Counter(r.tenant for r in await claim(prunner, 4)) == {A: 2, B: 2}


async def test_fair_off_keeps_priority_order_across_tenants(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("work", [{"p": 0} for _ in range(5)], tenant=A)
    await prunner.schedule_jobs("work", [{"p": 5} for _ in range(3)], tenant=B, priority=5)
    await prunner.schedule_jobs("work", [{"p": 9} for _ in range(2)], tenant=C, priority=9)
    rows = await claim(prunner, 6, force=False)
    assert [r.data["p"] for r in rows] == [9, 9, 5, 5, 5, 0]


async def test_a_single_tenant_queue_is_claimed_in_priority_order(
    prunner: PostgresJobRunner,
) -> None:
    await prunner.schedule_jobs("work", [{"p": 0} for _ in range(5)], tenant=A)
    await prunner.schedule_jobs("work", [{"p": 3} for _ in range(3)], tenant=A, priority=3)
    rows = await claim(prunner, 6)
    assert [r.data["p"] for r in rows] == [3, 3, 3, 0, 0, 0]
    assert len(await claim(prunner, 6)) == 2


async def test_one_worker_alternates_tenants_claim_after_claim(
    prunner: PostgresJobRunner,
) -> None:
    """The schedule is the worker's own: claims of one job each still take turns."""
    await prunner.schedule_jobs("work", [{} for _ in range(20)], tenant=A)
    await prunner.schedule_jobs("work", [{} for _ in range(20)], tenant=B)
    await prunner.schedule_jobs("work", [{} for _ in range(20)], tenant=C)
    store = prunner.queue_store()
    request = ClaimRequest(worker_id=uuid.uuid4(), queues=("default",), limit=1, lease_seconds=30.0)
    try:
        order = [(await store.claim(request)).jobs[0].tenant for _ in range(9)]
    finally:
        await store.close()
    assert Counter(order) == {A: 3, B: 3, C: 3}
    assert all(order[i] != order[i + 1] for i in range(8)), order


async def test_weights_share_claims_in_proportion(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("work", [{} for _ in range(200)], tenant=A)
    await prunner.schedule_jobs("work", [{} for _ in range(200)], tenant=B)
    await prunner.flow.set_tenant_weight(A, 3)
    got: Counter[uuid.UUID] = Counter()
    for _ in range(10):
        got.update(r.tenant for r in await claim(prunner, 4))
    assert sum(got.values()) == 40
    assert 28 <= got[A] <= 32, got


async def test_a_returning_tenant_gets_no_burst_for_its_idle_time(
    prunner: PostgresJobRunner,
) -> None:
    await prunner.schedule_jobs("work", [{} for _ in range(100)], tenant=A)
    await prunner.flow.set_fair_claiming(True)
    for _ in range(5):
        await claim(prunner, 10)  # A alone: its pass and the virtual clock advance
    await prunner.schedule_jobs("work", [{} for _ in range(100)], tenant=B)
    rows = await claim(prunner, 10)
    assert Counter(r.tenant for r in rows) == {A: 5, B: 5}


async def test_priorities_still_order_a_tenants_own_jobs(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("work", [{"p": 0} for _ in range(5)], tenant=A)
    await prunner.schedule_jobs("work", [{"p": 9} for _ in range(3)], tenant=A, priority=9)
    await prunner.schedule_jobs("work", [{"p": 0} for _ in range(5)], tenant=B)
    rows = await claim(prunner, 6)
    assert sorted(r.data["p"] for r in rows if r.tenant == A) == [9, 9, 9]
    assert Counter(r.tenant for r in rows) == {A: 3, B: 3}


async def test_concurrency_limits_per_tenant_name_and_pair(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("work", [{} for _ in range(20)], tenant=A)
    await prunner.schedule_jobs("report", [{} for _ in range(20)], tenant=B)
    await prunner.schedule_jobs("report", [{} for _ in range(20)], tenant=C)
    await prunner.schedule_jobs("work", [{} for _ in range(20)], tenant=C)
    await prunner.flow.set_concurrency_limit(tenant=A, limit=2)
    await prunner.flow.set_concurrency_limit(tenant=ALL_TENANTS, name="report", limit=3)
    await prunner.flow.set_concurrency_limit(tenant=C, name="work", limit=1)
    held = await claim(prunner, 50)
    key = Counter((r.tenant, r.name) for r in held)
    assert key[(A, "work")] == 2
    assert key[(B, "report")] + key[(C, "report")] == 3
    assert key[(C, "work")] == 1
    assert await claim(prunner, 50) == []  # everything at its limit: nothing more
    await finish(prunner, [r for r in held if r.tenant == A][:1])
    again = await claim(prunner, 50)
    assert [(r.tenant, r.name) for r in again] == [(A, "work")]
    limits = {(r.tenant, r.name): r for r in await prunner.flow.get_limits(tenant=ALL_TENANTS)}
    assert limits[(A, None)].running == 2
    assert limits[(A, None)].max_running == 2
    assert limits[(None, "report")].running == 3
    # A tenant sees its own rules and the name rules, never another tenant's.
    seen = {(r.tenant, r.name) for r in await prunner.flow.get_limits(tenant=B)}
    assert seen == {(None, "report")}


async def test_rescue_and_release_free_capacity(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("work", [{} for _ in range(5)], tenant=A)
    await prunner.flow.set_concurrency_limit(tenant=A, limit=1)
    (held,) = await claim(prunner, 5)
    assert await claim(prunner, 5) == []
    await prunner.schedule_store.release([held.ref])
    (held2,) = await claim(prunner, 5)
    assert await claim(prunner, 5) == []
    async with prunner.db.connection() as conn:  # the worker died: its lease runs out
        await conn.execute(
            f"UPDATE \"{prunner.schema}\".jobs SET lease_expires_at = now() - interval '1 s' "
            "WHERE job_id = %s",
            (held2.job_id,),
        )
    assert await prunner.schedule_store.rescue_expired() == 1
    assert len(await claim(prunner, 5)) == 1


async def test_rate_limit_is_a_sliding_window(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("ping", [{} for _ in range(10)], tenant=A)
    await prunner.schedule_jobs("work", [{} for _ in range(10)], tenant=B)
    await prunner.flow.set_rate_limit(tenant=ALL_TENANTS, name="ping", count=3, per=3600)
    await prunner.flow.set_rate_limit(tenant=B, count=2, per=3600)
    rows = await claim(prunner, 20)
    assert Counter(r.name for r in rows) == {"ping": 3, "work": 2}
    await finish(prunner, rows)  # finishing does not refund a rate window
    assert await claim(prunner, 20) == []
    (rule,) = [r for r in await prunner.flow.get_limits(tenant=A) if r.name == "ping"]
    assert rule.rate_used == 3
    assert rule.rate_count == 3
    assert rule.rate_period == 3600
    await prunner.flow.set_rate_limit(tenant=ALL_TENANTS, name="ping", count=None)
    assert Counter(r.name for r in await claim(prunner, 20)) == {"ping": 7}


async def test_pause_resume_and_purge(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("work", [{} for _ in range(4)], tenant=A)
    await prunner.schedule_jobs("report", [{} for _ in range(4)], tenant=B)
    await prunner.schedule_jobs("work", [{} for _ in range(4)], tenant=B)
    await prunner.flow.pause(tenant=A)
    await prunner.flow.pause(tenant=ALL_TENANTS, name="report")
    rows = await claim(prunner, 20)
    assert Counter((r.tenant, r.name) for r in rows) == {(B, "work"): 4}
    await prunner.flow.resume(tenant=ALL_TENANTS, name="report")
    assert Counter(r.name for r in await claim(prunner, 20)) == {"report": 4}
    await prunner.flow.resume(tenant=A)
    (one,) = await claim(prunner, 1)
    assert one.tenant == A
    assert await prunner.flow.purge_tenant(A) == 3  # the running one stays
    info = await prunner.get_job_status(one.job_id, tenant=A)
    assert info is not None
    assert info.status.value == "processing"
    assert await prunner.flow.purge_tenant(A) == 0
    # Pausing and resuming with nothing else configured leaves no rule behind.
    assert await prunner.flow.get_limits(tenant=ALL_TENANTS) == []


async def test_worker_switches_to_the_fair_claim_when_a_rule_appears(
    make_runner: MakeRunner, registry: Any
) -> None:
    done: list[uuid.UUID] = []

    async def work(ctx: Any, data: dict[str, Any]) -> None:
        done.append(ctx.tenant)

    registry.add("work", work)
    runner = await make_runner()
    async with running_worker(runner, concurrency=4):
        await runner.flow.pause(tenant=A)  # flow control goes on while the worker runs
        held = await runner.schedule_job("work", {}, tenant=A)
        marker = await runner.schedule_job("work", {}, tenant=B)
        await runner.wait_for_job(marker.job_id, tenant=B, timeout=30)
        info = await runner.get_job_status(held.job_id, tenant=A)
        assert info is not None
        assert info.status.value == "queued"
        await runner.flow.resume(tenant=A)
        final = await runner.wait_for_job(held.job_id, tenant=A, timeout=30)
        assert final.status.value == "completed"
    metrics = await runner.get_metrics(tenant=ALL_TENANTS)
    flow = metrics.extra["flow"]
    assert flow["enabled"] is False
    assert flow["rules"] == []


async def test_metrics_show_rules_usage_and_tenants(prunner: PostgresJobRunner) -> None:
    await prunner.schedule_jobs("work", [{} for _ in range(5)], tenant=A)
    await prunner.flow.set_concurrency_limit(tenant=A, limit=2)
    await claim(prunner, 5)
    flow = (await prunner.get_metrics(tenant=A)).extra["flow"]
    assert flow["enabled"] is True
    assert flow["rules"][0]["running"] == 2
    assert flow["rules"][0]["max_running"] == 2
    assert flow["tenants"][str(A)] == {"queued": 3, "due": 3, "running": 2, "pass": None}
    other = await prunner.flow_metrics(tenant=B)
    assert other["rules"] == []
    assert other["tenants"] == {}


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("set_concurrency_limit", {"limit": 1, "tenant": ALL_TENANTS}),  # no scope
        ("set_concurrency_limit", {"limit": -1, "tenant": A}),
        ("set_concurrency_limit", {"limit": True, "tenant": A}),
        ("set_concurrency_limit", {"limit": 1, "tenant": "not-a-uuid"}),
        ("set_rate_limit", {"count": 1, "per": 0, "tenant": A}),
        ("set_rate_limit", {"count": 1, "per": "1s", "tenant": A}),
        ("set_rate_limit", {"count": 1, "tenant": A, "name": ""}),
        ("pause", {"tenant": ALL_TENANTS}),
    ],
)
async def test_bad_arguments_are_refused_and_nothing_is_written(
    prunner: PostgresJobRunner, call: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError):
        await getattr(prunner.flow, call)(**kwargs)
    assert await prunner.flow.get_limits(tenant=ALL_TENANTS) == []
    with pytest.raises(InvalidArgumentError):
        await prunner.flow.set_tenant_weight(A, 0)
    with pytest.raises(InvalidArgumentError):
        await prunner.flow.purge_tenant(A, queue="")


async def test_sync_twin_controls_flow(jobrunner_dsn: str, schema: str) -> None:
    async def build() -> PostgresJobRunner:
        made = PostgresJobRunner(
            jobrunner_dsn, schema=schema, require_registered=False, pool_size=2
        )
        await made.start()
        return made

    def body() -> None:
        sync = SyncJobRunner(build)
        try:
            sync.schedule_jobs("work", [{}, {}, {}], tenant=A)
            sync.flow.pause(tenant=A)
            assert [r.paused for r in sync.flow.get_limits(tenant=A)] == [True]
            assert sync.flow.metrics(tenant=A)["tenants"][str(A)]["queued"] == 3
            assert sync.flow.purge_tenant(A) == 3
            sync.flow.resume(tenant=A)
            assert sync.flow.get_limits(tenant=ALL_TENANTS) == []
        finally:
            sync.close()

    await asyncio.to_thread(body)


async def test_a_job_due_after_an_empty_claim_is_claimed_again_at_once(
    prunner: PostgresJobRunner,
) -> None:
    """An empty claim followed by a due job means "blocked" (back off) only when the job was
    due before that claim was sent: one that fell due while it ran (a NOTIFY woke the worker
    just before a scheduled job's time) is claimed again at once, not BLOCKED_POLL later."""
    request = ClaimRequest(
        worker_id=uuid.uuid4(), queues=("default",), limit=10, lease_seconds=30.0
    )
    store = prunner.queue_store()
    try:
        assert (await store.claim(request)).jobs == []
        await prunner.schedule_job("work", {}, tenant=A)  # due now: after the claim was sent
        assert await store.idle_delay(("default",), longest=5.0) == 0.0
        (job,) = (await store.claim(request)).jobs
        assert job.tenant == A
        # Held back: due before the claim that found nothing, so the worker backs off.
        await prunner.flow.pause(tenant=B)
        await prunner.schedule_job("work", {}, tenant=B)
        assert (await store.claim(request)).jobs == []
        assert await store.idle_delay(("default",), longest=5.0) == pytest.approx(BLOCKED_POLL)
    finally:
        await store.close()


async def test_stale_statistics_are_refreshed_beside_the_claims(prunner: PostgresJobRunner) -> None:
    """A claim never waits for the ANALYZE that stale statistics call for (0.1 s on a
    100k-job backlog, added to every job that claim took): the refresh runs on a pooled
    connection beside the claims. Here the ANALYZE cannot finish (another session holds the
    lock it needs) while the claim must."""
    live = psycopg.sql.SQL("{}.jobs_live").format(psycopg.sql.Identifier(prunner.schema))
    blocker = await psycopg.AsyncConnection.connect(prunner.db.conninfo)
    store = prunner.queue_store()
    try:
        await blocker.execute(
            psycopg.sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(live)
        )
        await prunner.schedule_jobs("work", [{}] * 2000, tenant=A)

        async def stale() -> bool:
            async with prunner.db.connection() as conn:
                cur = await conn.execute(
                    prunner.db.queries.fair_stats_stale, {"table": live.as_string(None)}
                )
                row = await cur.fetchone()
            return bool(row and row["stale"])

        await eventually(stale, what="the statistics counters showing 2,000 new rows")
        request = ClaimRequest(
            worker_id=uuid.uuid4(), queues=("default",), limit=10, lease_seconds=30.0
        )
        jobs = (await asyncio.wait_for(store.claim(request), 20)).jobs
        assert len(jobs) == 10

        async def analyze_waits() -> bool:
            async with prunner.db.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM pg_stat_activity "
                    "WHERE query LIKE '%%ANALYZE%%' AND wait_event_type = 'Lock' "
                    "AND pid <> pg_backend_pid()"
                )
                row = await cur.fetchone()
            return bool(row and row["n"])

        # The refresh did start, and waits for the lock beside the claim.
        await eventually(analyze_waits, what="an ANALYZE waiting for the lock")
        await blocker.rollback()

        await eventually(stale, lambda is_stale: not is_stale, what="the ANALYZE to finish")
    finally:
        await blocker.close()
        await store.close()
