"""Property tests of the job state machine against the real database.

Hypothesis drives random sequences of enqueue, claim (the worker's ``claim_jobs`` SQL with
chosen worker ids), heartbeat, progress, complete, fail (with and without a retry request),
cancel, release, lease expiry, clock moves, rescue and ``retry_job``, on jobs due now or later.

The clock is the database's ``now()``; it is moved without sleeping by shifting every
``run_at`` and ``lease_expires_at`` back by the same amount (the same as ``now()`` jumping
forward), which makes delayed retries and future jobs due and leases run out. A failure always
*asks* for a retry when Hypothesis says so: the database alone applies the retry policy.
A model predicts every outcome; after each step the database must agree with it and:

- a job has at most one live attempt: one ``processing`` row holding one token and one worker;
- attempts never exceed ``max_attempts``;
- terminal states stay terminal (only an explicit ``retry_job`` leaves them);
- an attempt with a stale token changes nothing at all (the row is byte-for-byte the same);
- every job is in exactly one known state and no job appears or disappears.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from psycopg.rows import dict_row

from jobrunner import JobHandlerRegistry, RetryPolicy
from jobrunner._db._database import Database
from jobrunner._queue._store import AttemptRef, CompletedAttempt, FailedAttempt
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._store import completed_params, failed_params

LIVE = {"pending", "queued", "processing", "retrying"}
TERMINAL = {"completed", "failed", "cancelled"}
WORKERS = [uuid.UUID(int=i + 1) for i in range(3)]
TENANT = uuid.UUID("5e5e5e5e-0000-4000-8000-000000000001")
LEASE = 30.0


@dataclass
class ModelJob:
    job_id: uuid.UUID
    max_attempts: int
    status: str = "queued"
    attempts: int = 0
    token: int = 0
    holder: uuid.UUID | None = None
    #: Seconds of (virtual) clock until the lease runs out / until ``run_at``; real time only
    #: adds milliseconds, and every delay and clock move is a whole number of seconds >= 10.
    lease_left: float = 0.0
    due_in: float = 0.0
    completions: int = 0

    @property
    def expired(self) -> bool:
        return self.status == "processing" and self.lease_left <= 0

    @property
    def due(self) -> bool:
        return self.due_in <= 0


@dataclass(frozen=True)
class Attempt:
    job_id: uuid.UUID
    token: int
    worker: uuid.UUID


class JobStateMachine(RuleBasedStateMachine):
    """One example = a fresh jobs table and a random sequence of operations on it."""

    conn: psycopg.Connection[dict[str, Any]]
    runner: PostgresJobRunner
    schema: str

    jobs = Bundle("jobs")
    attempts = Bundle("attempts")

    def __init__(self) -> None:
        super().__init__()
        self.q = self.runner.db.queries
        self.model: dict[uuid.UUID, ModelJob] = {}
        self.seen_terminal: set[uuid.UUID] = set()
        self.conn.execute(
            sql.SQL("TRUNCATE {}.jobs, {}.job_details CASCADE").format(
                sql.Identifier(self.schema), sql.Identifier(self.schema)
            )
        )

    # -- helpers ------------------------------------------------------------------------------
    def run(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def row_snapshot(self, job_id: uuid.UUID) -> tuple[Any, int]:
        row = self.conn.execute(
            sql.SQL("SELECT to_jsonb(j) AS r FROM {}.jobs j WHERE job_id = %s").format(
                sql.Identifier(self.schema)
            ),
            (job_id,),
        ).fetchone()
        details = self.conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {}.job_details WHERE job_id = %s").format(
                sql.Identifier(self.schema)
            ),
            (job_id,),
        ).fetchone()
        assert row is not None and details is not None
        return json.dumps(row["r"], sort_keys=True), int(details["n"])

    @staticmethod
    def ref(attempt: Attempt) -> AttemptRef:
        return AttemptRef(TENANT, attempt.job_id, attempt.token)

    def is_live(self, attempt: Attempt) -> bool:
        job = self.model[attempt.job_id]
        return job.status == "processing" and job.token == attempt.token

    def fenced(self, attempt: Attempt, query: str, params: dict[str, Any]) -> int:
        """Run an outcome for ``attempt``; a stale one must leave the row untouched."""
        live = self.is_live(attempt)
        before = None if live else self.row_snapshot(attempt.job_id)
        cur = self.conn.execute(query, params)
        changed = len(cur.fetchall()) if cur.description else cur.rowcount
        if live:
            assert changed == 1, f"the live attempt {attempt} was refused"
        else:
            assert changed == 0, f"the stale attempt {attempt} changed the job"
            assert self.row_snapshot(attempt.job_id) == before, "a stale token changed the row"
        return changed

    # -- rules -----------------------------------------------------------------------------
    @initialize(target=jobs, sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3))
    def some_jobs(self, sizes: list[int]) -> Any:
        return multiple(*(self.enqueue(n) for n in sizes))

    @rule(target=jobs, max_attempts=st.integers(1, 3), delay=st.sampled_from([0, 0, 60, 3600]))
    def enqueue(self, max_attempts: int, delay: int = 0) -> uuid.UUID:
        params = self.runner.prepare_insert(
            f"sm.a{max_attempts}",
            {"n": len(self.model)},
            datetime.now(UTC) + timedelta(seconds=delay) if delay else None,
            {"tenant": TENANT},
        )
        rows = self.run(self.q.insert_job, params)
        job_id = rows[0]["job_id"]
        status = "pending" if delay else "queued"  # a future job waits as `pending`
        self.model[job_id] = ModelJob(job_id, max_attempts, status=status, due_in=delay)
        return job_id

    @rule(target=attempts, worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def claim(self, worker: uuid.UUID, limit: int) -> Any:
        rows = self.run(
            self.q.claim_jobs,
            {
                "queues": ["default"],
                "limit": limit,
                "worker_id": worker,
                "lease_seconds": LEASE,
                # FlowGate's: fair, the flow_state version of a fresh schema (0011), no state
                "fair": True,
                "version": 1,
                "vclock": 0.0,
                "pass_tenants": [],
                "pass_values": [],
            },
        )
        claimable = [
            j
            for j in self.model.values()
            if j.status in {"queued", "retrying", "pending"} and j.due
        ]
        assert len(rows) == min(limit, len(claimable))
        claimed = []
        for row in rows:
            job = self.model[row["job_id"]]
            assert job in claimable, f"claimed a job that was {job.status}"
            job.status, job.holder, job.lease_left = "processing", worker, LEASE
            job.attempts += 1
            job.token += 1
            assert row["attempts"] == job.attempts and row["lease_token"] == job.token
            claimed.append(Attempt(job.job_id, job.token, worker))
        return multiple(*claimed)

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: uuid.UUID) -> None:
        rows = self.run(self.q.heartbeat, {"worker_id": worker, "lease_seconds": LEASE})
        held = {(r["job_id"], r["lease_token"]) for r in rows}
        expected = {
            (j.job_id, j.token)
            for j in self.model.values()
            if j.status == "processing" and j.holder == worker
        }
        assert held == expected
        for job in self.model.values():
            if (job.job_id, job.token) in held:
                job.lease_left = LEASE  # a beat before the rescue scan renews the lease

    @rule(attempt=attempts, pct=st.integers(0, 100))
    def progress(self, attempt: Attempt, pct: int) -> None:
        self.fenced(
            attempt,
            self.q.save_progress,
            {
                "tenant": TENANT,
                "job_id": attempt.job_id,
                "token": attempt.token,
                "progress": pct,
                "message": "sm",
            },
        )

    @rule(attempt=attempts)
    def complete(self, attempt: Attempt) -> None:
        live = self.is_live(attempt)
        self.fenced(
            attempt,
            self.q.complete_jobs,
            completed_params(
                [CompletedAttempt(self.ref(attempt), '{"ok": true}', 0.0, 1.0)],
                str(attempt.worker),
            ),
        )
        if live:
            job = self.model[attempt.job_id]
            job.status, job.holder = "completed", None
            job.completions += 1

    @rule(attempt=attempts, wants_retry=st.booleans(), later=st.booleans())
    def fail(self, attempt: Attempt, wants_retry: bool, later: bool) -> None:
        job = self.model[attempt.job_id]
        # The caller asks for a retry whatever the policy says (a buggy or hostile worker);
        # fail_jobs must refuse it once the attempts are used up.
        retry_in = (3600.0 if later else 0.0) if wants_retry else None
        retry = wants_retry and job.attempts < job.max_attempts
        live = self.is_live(attempt)
        self.fenced(
            attempt,
            self.q.fail_jobs,
            failed_params(
                [
                    FailedAttempt(
                        self.ref(attempt),
                        '{"type": "E", "message": "boom", "traceback": null}',
                        retry_in,
                        0.0,
                        1.0,
                    )
                ],
                str(attempt.worker),
            ),
        )
        if live:
            job.holder = None
            job.status = "retrying" if retry else "failed"
            if retry:
                job.due_in = retry_in or 0.0

    @rule(attempt=consumes(attempts))
    def release(self, attempt: Attempt) -> None:
        live = self.is_live(attempt)
        self.fenced(
            attempt,
            self.q.release_jobs,
            {
                "tenants": [TENANT],
                "job_ids": [attempt.job_id],
                "tokens": [attempt.token],
                "channel": self.runner.db.channel_jobs,
            },
        )
        if live:
            job = self.model[attempt.job_id]
            job.status, job.holder, job.due_in = "queued", None, 0.0
            job.attempts -= 1

    @rule(job_id=jobs)
    def cancel(self, job_id: uuid.UUID) -> None:
        job = self.model[job_id]
        rows = self.run(
            self.q.cancel_job,
            {
                "tenant": TENANT,
                "job_id": job_id,
                "reason": "sm",
                "cancelled_by": "test",
                "runner_type": "postgres",
                "channel": self.runner.db.channel_cancel,
            },
        )
        assert len(rows) == (1 if job.status in LIVE else 0)
        if job.status in LIVE:
            # A cancel fences the attempt it stops: the token moves on.
            job.status, job.holder, job.token = "cancelled", None, job.token + 1

    @rule(job_id=jobs)
    def expire_lease(self, job_id: uuid.UUID) -> None:
        """Move the clock: the lease ends in the past, as if no heartbeat came for 30 s."""
        cur = self.conn.execute(
            sql.SQL(
                "UPDATE {}.jobs SET lease_expires_at = now() - interval '1 second' "
                "WHERE job_id = %s AND status = 'processing'"
            ).format(sql.Identifier(self.schema)),
            (job_id,),
        )
        job = self.model[job_id]
        assert cur.rowcount == (1 if job.status == "processing" else 0)
        if job.status == "processing":
            job.lease_left = -1.0

    @rule()
    def rescue(self) -> None:
        rows = self.run(self.q.rescue_expired, {})
        expected = {j.job_id for j in self.model.values() if j.status == "processing" and j.expired}
        assert {r["job_id"] for r in rows} == expected
        for job_id in expected:
            job = self.model[job_id]
            job.holder, job.due_in = None, 0.0
            job.status = "failed" if job.attempts >= job.max_attempts else "retrying"

    @rule(seconds=st.sampled_from([10, 30, 60, 1800, 3600]))
    def advance_clock(self, seconds: int) -> None:
        """The clock jumps ``seconds`` forward: delayed retries and future jobs whose time has
        come become claimable, and leases not renewed in time run out."""
        self.conn.execute(
            sql.SQL(
                "UPDATE {}.jobs SET run_at = run_at - make_interval(secs => %s), "
                "lease_expires_at = lease_expires_at - make_interval(secs => %s) "
                "WHERE status IN ('pending', 'queued', 'retrying', 'processing')"
            ).format(sql.Identifier(self.schema)),
            (seconds, seconds),
        )
        for job in self.model.values():
            if job.status in LIVE:
                job.due_in -= seconds
                job.lease_left -= seconds

    @invariant()
    def due_jobs_are_exactly_the_claimable_ones(self) -> None:
        """What the clock says is due agrees with the database's ``run_at <= now()``."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT job_id FROM {}.jobs WHERE status IN ('pending', 'queued', 'retrying') "
                "AND run_at <= now()"
            ).format(sql.Identifier(self.schema))
        ).fetchall()
        expected = {
            j.job_id for j in self.model.values() if j.status in LIVE - {"processing"} and j.due
        }
        assert {r["job_id"] for r in rows} == expected

    @rule(attempt=attempts)
    def lose_lease(self, attempt: Attempt) -> None:
        """The attempt's worker stalls past its lease and the rescue scan runs: the shortest
        way to a stale attempt (its job re-queued and perhaps re-claimed by another worker)."""
        self.expire_lease(attempt.job_id)
        self.rescue()

    @rule(
        target=attempts,
        attempt=attempts,
        other=st.sampled_from(WORKERS),
        outcome=st.sampled_from(["complete", "fail", "progress", "release"]),
    )
    def zombie_outcome(self, attempt: Attempt, other: uuid.UUID, outcome: str) -> Any:
        """A zombie: the attempt loses its lease, the job is claimed again, and then the old
        attempt reports (random sequences reach this path too rarely on their own)."""
        self.lose_lease(attempt)
        fresh = self.claim(other, 3)
        if outcome == "complete":
            self.complete(attempt)
        elif outcome == "fail":
            self.fail(attempt, wants_retry=True, later=False)
        elif outcome == "progress":
            self.progress(attempt, 50)
        else:
            self.release(attempt)
        return fresh

    @precondition(lambda self: any(j.status in TERMINAL for j in self.model.values()))
    @rule(job_id=jobs)
    def retry_job(self, job_id: uuid.UUID) -> None:
        job = self.model[job_id]
        rows = self.run(
            self.q.monitoring_retry_job,
            {
                "tenant": TENANT,
                "job_id": job_id,
                "runner_type": "postgres",
                "requested_by": "test",
                "channel": self.runner.db.channel_jobs,
            },
        )
        accepted = job.status in {"failed", "cancelled"}
        assert len(rows) == (1 if accepted else 0)
        if accepted:
            job.status, job.attempts, job.due_in, job.holder = "queued", 0, 0.0, None
            self.seen_terminal.discard(job_id)  # the one sanctioned way out of a final state

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def database_agrees_with_model(self) -> None:
        rows = self.conn.execute(
            sql.SQL(
                "SELECT job_id, status::text AS status, attempts, max_attempts, lease_token,"
                " worker_id, lease_expires_at FROM {}.jobs"
            ).format(sql.Identifier(self.schema))
        ).fetchall()
        assert {r["job_id"] for r in rows} == set(self.model), "a job appeared or vanished"
        completions = {
            r["job_id"]: r["n"]
            for r in self.conn.execute(
                sql.SQL(
                    "SELECT job_id, count(*) AS n FROM {}.job_details WHERE step_name = "
                    "'attempt' AND status = 'completed' GROUP BY job_id"
                ).format(sql.Identifier(self.schema))
            ).fetchall()
        }
        for row in rows:
            job = self.model[row["job_id"]]
            status = row["status"]
            assert status in LIVE | TERMINAL
            assert (status, row["attempts"], row["lease_token"]) == (
                job.status,
                job.attempts,
                job.token,
            ), f"database {row} != model {job}"
            # One live attempt at most: only a processing row holds a worker and a lease.
            if status == "processing":
                assert row["worker_id"] == job.holder and row["lease_expires_at"] is not None
            else:
                assert row["worker_id"] is None and row["lease_expires_at"] is None
            assert row["attempts"] <= row["max_attempts"], "attempts exceed the policy"
            # Used-up attempts end the job: it never waits for another one.
            if status in {"queued", "retrying", "pending"}:
                assert row["attempts"] < row["max_attempts"], f"{job} retries past its policy"
            assert completions.get(row["job_id"], 0) == job.completions
            # Terminal stays terminal, unless an explicit retry_job moved it.
            assert not (row["job_id"] in self.seen_terminal and status not in TERMINAL), (
                f"{job} left a terminal state without retry_job"
            )
            if status in TERMINAL:
                self.seen_terminal.add(row["job_id"])


def _handler(ctx: Any, data: dict[str, Any]) -> None:
    return None


@pytest.fixture
def sm_schema(jobrunner_dsn: str) -> Any:
    schema = f"jrt_sm_{uuid.uuid4().hex[:10]}"
    asyncio.run(Database(jobrunner_dsn, schema=schema).migrate())
    try:
        yield schema
    finally:
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_job_state_machine(jobrunner_dsn: str, sm_schema: str) -> None:
    registry = JobHandlerRegistry()
    for n in (1, 2, 3):
        registry.add(f"sm.a{n}", _handler, retry=RetryPolicy(max_attempts=n))
    runner = PostgresJobRunner(jobrunner_dsn, schema=sm_schema, registry=registry)
    with psycopg.connect(jobrunner_dsn, autocommit=True, row_factory=dict_row) as conn:
        JobStateMachine.conn = conn
        JobStateMachine.runner = runner
        JobStateMachine.schema = sm_schema
        run_state_machine_as_test(
            JobStateMachine,
            settings=settings(
                max_examples=150,
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


def test_retry_requested_past_the_policy_ends_failed(jobrunner_dsn: str, sm_schema: str) -> None:
    """The machine's shortest path to the policy check, run every time: a job with one attempt
    fails asking for a retry (now, then later) and ends ``failed``, not ``retrying``."""
    registry = JobHandlerRegistry()
    registry.add("sm.a1", _handler, retry=RetryPolicy(max_attempts=1))
    registry.add("sm.a2", _handler, retry=RetryPolicy(max_attempts=2))
    runner = PostgresJobRunner(jobrunner_dsn, schema=sm_schema, registry=registry)
    with psycopg.connect(jobrunner_dsn, autocommit=True, row_factory=dict_row) as conn:
        JobStateMachine.conn = conn
        JobStateMachine.runner = runner
        JobStateMachine.schema = sm_schema
        machine = JobStateMachine()
        one = machine.enqueue(1)
        two = machine.enqueue(2)
        for later in (False, True, False):
            for attempt in machine.claim(WORKERS[0], 3).values:
                machine.fail(attempt, wants_retry=True, later=later)
            machine.advance_clock(3600)
            machine.database_agrees_with_model()
            machine.due_jobs_are_exactly_the_claimable_ones()
        assert machine.model[one].status == machine.model[two].status == "failed"
        assert (machine.model[one].attempts, machine.model[two].attempts) == (1, 2)
        machine.teardown()
