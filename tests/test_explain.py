"""Plan guards for the worker's hot queries (issue #7): with many finished jobs in the table,
claiming reads the claim index in order and never scans or sorts the whole jobs table.

Checked for both the custom plan and the generic plan (psycopg prepares a statement after a
few executions and PostgreSQL may then switch to a generic plan).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from jobrunner._queue._store import AttemptRef, ClaimRequest, CompletedAttempt, FailedAttempt
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._store import completed_params, failed_params

FINISHED = 20_000
LIVE = 20_000  # a backlog: the claim must walk the index, not sort it
RUNNING = 3_000


async def _fill(runner: PostgresJobRunner) -> None:
    """Many finished jobs of several tenants plus a few hundred due ones, then ANALYZE."""
    async with runner.db.connection() as conn:
        await conn.execute(
            f"""
            INSERT INTO {_schema(runner)}.jobs
                (tenant, type, status, user_id, data, attempts, lease_token, completed_at,
                 created_at, queue, run_at)
            SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g %% 8), 12, '0'))::uuid,
                   'explain.job',
                   CASE WHEN g <= %(finished)s THEN
                        (CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'completed' END)
                   ELSE 'queued' END::{_schema(runner)}.job_status,
                   '00000000-0000-0000-0000-000000000000', '{{}}'::jsonb, 1, 1,
                   CASE WHEN g <= %(finished)s THEN now() END,
                   timezone('utc', now()) - make_interval(secs => %(total)s - g),
                   'default', now() - make_interval(secs => %(total)s - g)
            FROM generate_series(1, %(total)s) g
            """,
            {"finished": FINISHED, "total": FINISHED + LIVE},
        )
        await conn.execute(f"ANALYZE {_schema(runner)}.jobs_live, {_schema(runner)}.jobs_finished")
        # After ANALYZE, thousands of jobs start running: the statistics say none run, which
        # once made the outcome writes loop over every running job per outcome.
        await conn.execute(
            f"""
            UPDATE {_schema(runner)}.jobs SET status = 'processing', worker_id = %(w)s,
                   lease_expires_at = now() + interval '1 minute'
            WHERE status = 'queued' AND job_id IN (
                SELECT job_id FROM {_schema(runner)}.jobs WHERE status = 'queued' LIMIT %(n)s)
            """,
            {"w": uuid.uuid4(), "n": RUNNING},
        )


def _schema(runner: PostgresJobRunner) -> str:
    return psycopg.sql.Identifier(runner.schema).as_string(None)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(_nodes(child))
    return out


async def _plan(conn: Any, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of ``query``'s plan on ``conn``."""
    cur = await conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params)
    row = await cur.fetchone()
    assert row is not None
    doc = row["QUERY PLAN"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    return _nodes(doc[0]["Plan"])


async def _explain(
    runner: PostgresJobRunner, query: str, params: dict[str, Any], *, generic: bool
) -> list[dict[str, Any]]:
    async with runner.db.connection() as conn, conn.transaction():
        if generic:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        return await _plan(conn, query, params)


async def _claim_params(runner: PostgresJobRunner, *, fair: bool) -> dict[str, Any]:
    """``claim_jobs``'s parameters as a new worker sends them (nothing served yet)."""
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.flow_state)
        state = await cur.fetchone()
    assert state is not None
    return {
        "queues": ["default"],
        "limit": 100,
        "worker_id": uuid.uuid4(),
        "lease_seconds": 30.0,
        "fair": fair,
        "version": state["version"],
        "vclock": 0.0,
        "pass_tenants": [],
        "pass_values": [],
    }


def _paths(plan: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every path from ``plan`` down to a leaf, subplans included."""
    children = plan.get("Plans", [])
    if not children:
        return [[plan]]
    return [[plan, *rest] for child in children for rest in _paths(child)]


def _jobs_scans(nodes: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [
        (n["Node Type"], n.get("Index Name"))
        for n in nodes
        if n.get("Relation Name") in ("jobs", "jobs_live", "jobs_finished")
    ]


async def test_hot_queries_use_indexes_with_many_finished_jobs(runner: PostgresJobRunner) -> None:
    await _fill(runner)  # once: filling is the slow part
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            psycopg.sql.SQL("SELECT count(*) AS n FROM {}.jobs WHERE status = 'completed'").format(
                psycopg.sql.Identifier(runner.schema)
            )
        )
        row = await cur.fetchone()
    # Guard the guard: the table really holds the finished rows the plans are checked with.
    assert row is not None
    assert row["n"] == FINISHED - FINISHED // 10
    for generic in (False, True):
        await _check_claim(runner, generic=generic)
        await _check_complete(runner, generic=generic)


async def _check_claim(runner: PostgresJobRunner, *, generic: bool) -> None:
    """The lock-free claim, fair (the default) and not, on a queue of eight tenants."""
    for fair in (True, False):
        params = await _claim_params(runner, fair=fair)
        nodes = await _explain(runner, runner.db.queries.claim_jobs, params, generic=generic)
        where = (generic, fair)
        scans = _jobs_scans(nodes)
        assert ("Index Scan", "jobs_live_claim_idx") in scans, (where, scans)
        assert all(kind != "Seq Scan" for kind, _ in scans), (where, scans)
        # The rows to update are found by ctid, not by joining the whole table.
        assert any(kind == "Tid Scan" for kind, _ in scans), (where, scans)
        # Every read of jobs_live is an index scan in index order under a LIMIT (the tenant
        # skip scan, each tenant's first jobs): a sort above one sorts only the few rows the
        # LIMIT lets through, never a tenant's or a queue's live rows.
        for sort in (n for n in nodes if n["Node Type"] == "Sort"):
            for path in _paths(sort):
                scan = path[-1]
                if scan.get("Relation Name") == "jobs_live" and scan["Node Type"] != "Tid Scan":
                    assert any(n["Node Type"] == "Limit" for n in path[1:-1]), (where, path)
        lock_rows = [n for n in nodes if n["Node Type"] == "LockRows"]
        assert lock_rows, nodes
        sorts = [s for lr in lock_rows for s in _nodes(lr) if s["Node Type"] == "Sort"]
        assert not sorts, (where, sorts)
        # The flow_state guard is read FOR SHARE (docs/fairness.md) by one InitPlan of its
        # own, by its primary key: a row lock per statement, not per candidate row.
        guard = [
            lr
            for lr in lock_rows
            if lr.get("Parent Relationship") == "InitPlan"
            and any(n.get("Relation Name") == "flow_state" for n in _nodes(lr))
        ]
        assert guard, (where, nodes)
        assert all(n["Node Type"] == "Index Scan" for g in guard for n in _nodes(g)[1:]), guard


async def _check_complete(runner: PostgresJobRunner, *, generic: bool) -> None:
    refs = [AttemptRef(uuid.uuid4(), uuid.uuid4(), 1) for _ in range(1000)]
    worker = str(uuid.uuid4())
    batches = {
        runner.db.queries.complete_jobs: completed_params(
            [CompletedAttempt(ref, None, 0.0, 1.0) for ref in refs], worker
        ),
        runner.db.queries.fail_jobs: failed_params(
            [FailedAttempt(ref, '{"type": "x"}', None, 0.0, 1.0) for ref in refs], worker
        ),
    }
    for query, params in batches.items():
        nodes = await _explain(runner, query, params, generic=generic)
        scans = _jobs_scans(nodes)
        # Linear in the batch (and never a walk over the running jobs per outcome): the rows
        # are found through the primary key, or by one hash or merge join (a seq scan only
        # while the table is small enough for the planner to prefer it).
        assert all(index != "jobs_live_lease_idx" for _, index in scans), (generic, scans)
        # A running job is never in jobs_finished: the plan leaves that partition out, so no
        # statistics of it (a new database's look empty) can make a probe of it read history.
        touched = {n.get("Relation Name") for n in nodes}
        assert "jobs_finished" not in touched, (generic, scans)
        quadratic = [
            n
            for n in nodes
            if n["Node Type"] == "Nested Loop"
            and n["Plans"][1]["Node Type"] in ("Function Scan", "CTE Scan")
        ]
        assert not quadratic, (generic, quadratic)
        if any(kind == "Seq Scan" for kind, _ in scans):
            joins = {n["Node Type"] for n in nodes} & {"Hash Join", "Merge Join"}
            assert joins, (generic, scans)


async def test_jobrunner_connections_never_jit_compile(runner: PostgresJobRunner) -> None:
    """The claim's estimate passes jit_above_cost on a backlog of a few thousand jobs, and
    compiling then cost ~50 ms of a 55 ms claim: every connection jobrunner opens, pooled or
    dedicated (the worker's claim and LISTEN connections), runs with JIT off."""
    async with runner.db.connection() as conn:
        cur = await conn.execute("SHOW jit")
        assert await cur.fetchone() == {"jit": "off"}
    conn = await runner.db.dedicated_connection()
    try:
        cur = await conn.execute("SHOW jit")
        assert await cur.fetchone() == {"jit": "off"}
    finally:
        await conn.close()


async def test_the_claim_connection_reuses_a_generic_plan(runner: PostgresJobRunner) -> None:
    """PostgreSQL would plan the prepared claim_jobs afresh on every run (its generic plan is
    estimated dearer), about 0.7 ms of each claim an idle worker makes for a new job: the
    store's claim connection forces the generic plan, which the test above checks."""
    store = runner.queue_store()
    request = ClaimRequest(
        worker_id=uuid.uuid4(), queues=("default",), limit=10, lease_seconds=30.0
    )
    try:
        for _ in range(8):  # psycopg prepares a statement on its sixth run
            await store.claim(request)
        async with store._hot_connection("claim") as conn:
            cur = await conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE %s",
                ("%jobs_live_claim_idx%",),
            )
            rows = await cur.fetchall()
    finally:
        await store.close()
    assert len(rows) == 1, rows
    assert rows[0]["generic_plans"] >= 2, rows
    assert rows[0]["custom_plans"] == 0, rows


async def test_a_claim_planned_on_an_empty_queue_reads_no_whole_table(
    runner: PostgresJobRunner,
) -> None:
    """The claim connection keeps its generic plan until jobs_live is next analysed, so the
    plan made on a new, empty queue serves the backlog that arrives later: it must find the
    claimed rows by ctid and the candidates through the claim index, never by a sequential
    scan (with one, claims took 90-150 ms each once 100,000 jobs had arrived)."""
    params = await _claim_params(runner, fair=True)
    store = runner.queue_store()
    try:
        async with store._hot_connection("claim") as conn:
            nodes = await _plan(conn, runner.db.queries.claim_jobs, params)
    finally:
        await store.close()
    scans = _jobs_scans(nodes)
    assert all(kind != "Seq Scan" for kind, _ in scans), scans
    assert any(kind == "Tid Scan" for kind, _ in scans), scans
