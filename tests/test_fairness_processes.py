"""Flow control across worker PROCESSES: limits never exceeded, rates, pause, fairness figures.

Three ``python -m jobrunner.cli worker`` processes share one schema for the whole module. Each
handler writes its start and end (database clock) to ``flow_ledger``; the tests compute the
most attempts of a scope that ever overlapped. Every test uses tenants of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobrunner import ALL_TENANTS
from jobrunner.backends.postgres import PostgresJobRunner

TESTS = Path(__file__).parent
WORKERS = 3
CONCURRENCY = 6

pytestmark = pytest.mark.timeout(240)

# Same table as apps/fairness_app.py writes (not imported: that would register its handlers
# in this process's default registry).
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.flow_ledger (
    job_id UUID PRIMARY KEY, tenant UUID NOT NULL, name TEXT NOT NULL, pid INTEGER NOT NULL,
    started TIMESTAMPTZ NOT NULL, ended TIMESTAMPTZ
)
"""


@pytest.fixture(scope="module")
def flow_schema(jobrunner_dsn: str) -> Iterator[str]:
    """A migrated schema with the ledger table, dropped at the end of the module."""
    schema = f"jrt_flow_{uuid.uuid4().hex[:10]}"

    async def setup() -> None:
        runner = PostgresJobRunner(jobrunner_dsn, schema=schema, require_registered=False)
        await runner.migrate()

    asyncio.run(setup())
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(LEDGER_DDL).format(schema=sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def workers(
    jobrunner_dsn: str, flow_schema: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes on the module's schema; stopped with SIGTERM afterwards."""
    logs = tmp_path_factory.mktemp("flow-workers")
    env = dict(os.environ)
    env.update(
        JOBRUNNER_DATABASE_URL=jobrunner_dsn,
        JOBRUNNER_SCHEMA=flow_schema,
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobrunner.cli",
                "worker",
                "--app",
                "apps.fairness_app",
                "--concurrency",
                str(CONCURRENCY),
                "--grace",
                "5",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"worker{n}.log").open("wb"),
        )
        for n in range(WORKERS)
    ]
    print(f"\nworker logs in {logs}")
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def frunner(
    jobrunner_dsn: str, flow_schema: str, workers: list[subprocess.Popen[bytes]]
) -> AsyncIterator[PostgresJobRunner]:
    """A producer runner on the workers' schema."""
    runner = PostgresJobRunner(
        jobrunner_dsn, schema=flow_schema, require_registered=False, pool_size=4
    )
    await runner.start()
    try:
        yield runner
    finally:
        for proc in workers:
            assert proc.poll() is None, f"worker exited with {proc.returncode}; see its log"
        await runner.close()


async def fetch(runner: PostgresJobRunner, query: str, *params: Any) -> list[dict[str, Any]]:
    text = sql.SQL(query).format(schema=sql.Identifier(runner.schema))
    async with runner.db.connection() as conn:
        cur = await conn.execute(text, params or None)
        return list(await cur.fetchall())


async def wait_finished(
    runner: PostgresJobRunner, tenants: list[uuid.UUID], timeout: float = 120
) -> None:
    """Poll (no event spans processes) until no job of ``tenants`` is live."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await fetch(
            runner,
            "SELECT count(*) AS n FROM {schema}.jobs WHERE tenant = ANY(%s) "
            "AND status IN ('pending', 'queued', 'retrying', 'processing')",
            tenants,
        )
        if rows[0]["n"] == 0:
            return
        assert time.monotonic() < deadline, f"{rows[0]['n']} jobs still live"
        await asyncio.sleep(0.1)


async def max_overlap(
    runner: PostgresJobRunner, tenants: list[uuid.UUID], key: str
) -> dict[Any, int]:
    """Most ledger intervals of each ``key`` group open at once (an end before a start at a tie)."""
    rows = await fetch(
        runner,
        "SELECT tenant, name, started, ended FROM {schema}.flow_ledger WHERE tenant = ANY(%s)",
        tenants,
    )
    events: dict[Any, list[tuple[Any, int]]] = {}
    for r in rows:
        assert r["ended"] is not None
        group = {"tenant": r["tenant"], "name": r["name"], "pair": (r["tenant"], r["name"])}[key]
        events.setdefault(group, []).extend([(r["started"], 1), (r["ended"], -1)])
    result = {}
    for group, evs in events.items():
        evs.sort(key=lambda e: (e[0], e[1]))
        now = peak = 0
        for _, step in evs:
            now += step
            peak = max(peak, now)
        result[group] = peak
    return result


def tenants(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def test_concurrency_limits_hold_across_worker_processes(
    frunner: PostgresJobRunner,
) -> None:
    t1, t2, t3, t4, free = tenants(5)
    flow = frunner.flow
    await flow.set_concurrency_limit(tenant=t1, limit=3)
    await flow.set_concurrency_limit(tenant=ALL_TENANTS, name="report", limit=2)
    await flow.set_concurrency_limit(tenant=t4, name="work", limit=1)
    await frunner.schedule_jobs("work", [{"ms": 40}] * 24, tenant=t1)
    await frunner.schedule_jobs("report", [{"ms": 40}] * 8, tenant=t2)
    await frunner.schedule_jobs("report", [{"ms": 40}] * 8, tenant=t3)
    await frunner.schedule_jobs("work", [{"ms": 20}] * 8, tenant=t4)
    await frunner.schedule_jobs("work", [{"ms": 20}] * 4, tenant=t2)  # unlimited pair
    await frunner.schedule_jobs("work", [{"ms": 40}] * 30, tenant=free)
    everyone = [t1, t2, t3, t4, free]
    await wait_finished(frunner, everyone)
    by_tenant = await max_overlap(frunner, everyone, "tenant")
    by_name = await max_overlap(frunner, [t2, t3], "name")
    by_pair = await max_overlap(frunner, [t4], "pair")
    print(f"\npeak overlap: tenant {by_tenant}, name {by_name}, pair {by_pair}")
    assert by_tenant[t1] <= 3
    assert by_name["report"] <= 2
    assert by_pair[(t4, "work")] <= 1
    # The limits bit: unlimited work really did run wider than any of them.
    assert by_tenant[free] > 3
    pids = await fetch(frunner, "SELECT count(DISTINCT pid) AS n FROM {schema}.flow_ledger")
    assert pids[0]["n"] == WORKERS
    await flow.clear(tenant=t1)
    await flow.clear(tenant=ALL_TENANTS, name="report")
    await flow.clear(tenant=t4, name="work")


async def test_a_limit_changed_at_run_time_is_picked_up(frunner: PostgresJobRunner) -> None:
    (t,) = tenants(1)
    await frunner.flow.set_concurrency_limit(tenant=t, limit=1)
    jobs = await frunner.schedule_jobs("work", [{"ms": 30}] * 16, tenant=t)
    deadline = time.monotonic() + 60
    while (
        len(
            await fetch(
                frunner,
                "SELECT 1 FROM {schema}.flow_ledger WHERE tenant = %s AND ended IS NOT NULL",
                t,
            )
        )
        < 3
    ):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await frunner.flow.set_concurrency_limit(tenant=t, limit=4)
    (changed,) = await fetch(frunner, "SELECT clock_timestamp() AS at")
    await wait_finished(frunner, [t])
    rows = await fetch(
        frunner,
        "SELECT started, ended FROM {schema}.flow_ledger WHERE tenant = %s ORDER BY started",
        t,
    )
    assert len(rows) == len(jobs)
    before = [r for r in rows if r["started"] < changed["at"]]
    for a, b in itertools.pairwise(before):
        assert a["ended"] <= b["started"]  # one at a time while the limit was 1
    assert (await max_overlap(frunner, [t], "tenant"))[t] > 1
    await frunner.flow.clear(tenant=t)


async def test_rate_limits_hold_across_worker_processes(frunner: PostgresJobRunner) -> None:
    ta, tb, tc = tenants(3)
    await frunner.flow.set_rate_limit(tenant=ALL_TENANTS, name="ping", count=4, per=1.0)
    await frunner.flow.set_rate_limit(tenant=tc, count=3, per=1.0)
    await frunner.schedule_jobs("ping", [{"ms": 5}] * 6, tenant=ta)
    await frunner.schedule_jobs("ping", [{"ms": 5}] * 6, tenant=tb)
    await frunner.schedule_jobs("work", [{"ms": 5}] * 7, tenant=tc)
    await wait_finished(frunner, [ta, tb, tc])
    # Claim instants (started_at is the claim's clock under the flow lock).
    for who, count in (([ta, tb], 4), ([tc], 3)):
        rows = await fetch(
            frunner,
            "SELECT started_at FROM {schema}.jobs WHERE tenant = ANY(%s) ORDER BY started_at",
            who,
        )
        times = [r["started_at"] for r in rows]
        assert len(times) == 12 if count == 4 else 7
        for i in range(len(times) - count):
            assert (times[i + count] - times[i]).total_seconds() >= 1.0, (i, times)
    await frunner.flow.clear(tenant=ALL_TENANTS, name="ping")
    await frunner.flow.clear(tenant=tc)


async def test_pause_resume_and_purge_across_processes(frunner: PostgresJobRunner) -> None:
    held, other = tenants(2)
    await frunner.flow.pause(tenant=held)
    await frunner.flow.pause(tenant=other, name="report")
    paused = await frunner.schedule_jobs("work", [{"ms": 5}] * 5, tenant=held)
    paused_name = await frunner.schedule_job("report", {"ms": 5}, tenant=other)
    marker = await frunner.schedule_job("work", {"ms": 5}, tenant=other)
    await frunner.wait_for_job(marker.job_id, tenant=other, timeout=60)
    states = await fetch(
        frunner,
        "SELECT status::text AS s, count(*) AS n FROM {schema}.jobs "
        "WHERE tenant = ANY(%s) AND job_id <> %s GROUP BY 1",
        [held, other],
        marker.job_id,
    )
    assert {r["s"]: r["n"] for r in states} == {"queued": 6}
    await frunner.flow.resume(tenant=held)
    await frunner.flow.resume(tenant=other, name="report")
    for job in [*paused, paused_name]:
        info = await frunner.wait_for_job(job.job_id, tenant=job.tenant, timeout=60)
        assert info.status.value == "completed"


async def test_fairness_scenario_small_tenant_next_to_a_backlog(
    frunner: PostgresJobRunner,
) -> None:
    """B's start delay with A's backlog absent and present (figures printed; see docs)."""
    big, small = tenants(2)
    backlog, burst = 3000, 100
    await frunner.flow.set_fair_claiming(True)

    async def delays(tag: str, total: int) -> list[float]:
        await wait_until_done(frunner, small, total)
        rows = await fetch(
            frunner,
            "SELECT extract(epoch FROM started_at - (created_at AT TIME ZONE 'UTC'))::float8 "
            "AS d FROM {schema}.jobs WHERE tenant = %s AND metadata->>'tag' = %s "
            "ORDER BY 1",
            small,
            tag,
        )
        return [r["d"] for r in rows]

    await frunner.schedule_jobs(
        "quick", [{"ms": 5}] * burst, tenant=small, metadata={"tag": "alone"}
    )
    alone = await delays("alone", burst)
    await frunner.schedule_jobs("quick", [{"ms": 5}] * backlog, tenant=big)
    await frunner.schedule_jobs(
        "quick", [{"ms": 5}] * burst, tenant=small, metadata={"tag": "backlog"}
    )
    crowded = await delays("backlog", 2 * burst)
    # Structural proof: while B's burst was served, A got about as many claims, not its backlog.
    (row,) = await fetch(
        frunner,
        "SELECT count(*) FILTER (WHERE tenant = %s AND started_at <= (SELECT max(started_at) "
        "FROM {schema}.jobs WHERE tenant = %s)) AS a_before FROM {schema}.jobs",
        big,
        small,
    )
    purged = await frunner.flow.purge_tenant(big)
    await wait_finished(frunner, [big, small])
    done = await fetch(
        frunner,
        "SELECT count(*) AS n FROM {schema}.jobs WHERE tenant = %s AND status = 'completed'",
        big,
    )
    await frunner.flow.set_fair_claiming(False)

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, round(p * (len(values) - 1)))] * 1000

    print(
        f"\nB start delay alone: p50 {pct(alone, 0.5):.0f} ms p99 {pct(alone, 0.99):.0f} ms; "
        f"with A backlog {backlog}: p50 {pct(crowded, 0.5):.0f} ms "
        f"p99 {pct(crowded, 0.99):.0f} ms; A claims before B's last: {row['a_before']}; "
        f"purged {purged}"
    )
    assert len(alone) == len(crowded) == burst
    assert row["a_before"] < backlog / 3
    assert purged + done[0]["n"] == backlog  # the purge removed queued jobs only


async def wait_until_done(runner: PostgresJobRunner, tenant: uuid.UUID, count: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        rows = await fetch(
            runner,
            "SELECT count(*) AS n FROM {schema}.jobs WHERE tenant = %s AND status = 'completed'",
            tenant,
        )
        if rows[0]["n"] >= count:
            return
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
