"""Every attempt ends (issue 13): one recorded outcome per claimed attempt, on a real PostgreSQL
with real worker processes, whatever handlers do and whatever happens to the workers.

- a property-based test (Hypothesis) generates per-attempt handler behaviours interleaved with
  cancel, retry, kill -9 and restart of two worker processes, and checks the invariants;
- regressions: a cancel-then-retry race on one worker, and SIGTERM with a handler that ignores
  cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.helpers import eventually, fetch, job_row
from apps.hostile_app import POLICY
from jobrunner import JobContext, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import isolated_schema, running_worker
from test_worker_process import WorkerProcess, worker_process

BEHAVIOURS = [
    "return",
    "slow",
    "raise",
    "system-exit",
    "keyboard-interrupt",
    "generator-exit",
    "cancelled",
    "hang",
    "swallow",
    "unstorable",
    "block-loop",
]
FINAL = {"completed", "failed", "cancelled"}
WORKER_ARGS = ("--app", "apps.hostile_app", "--lease", "1.5", "--grace", "0.5")

jobs_strategy = st.lists(
    st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=3), min_size=1, max_size=5
)
events_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("cancel"), st.integers(0, 4)),
        st.tuples(st.just("retry"), st.integers(0, 4)),
        st.tuples(st.just("kill"), st.integers(0, 1)),
        st.tuples(st.just("restart"), st.integers(0, 1)),
    ),
    max_size=6,
)


class _Workers:
    """Two worker subprocesses that a test can kill -9 and restart."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self.stack = contextlib.AsyncExitStack()
        self.procs: list[WorkerProcess | None] = [None, None]

    async def start(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.proc.returncode is None:
            return
        args = WORKER_ARGS[2:]
        wp = await self.stack.enter_async_context(
            worker_process(self.dsn, self.schema, *args, app="apps.hostile_app")
        )
        await wp.wait_for_line(r"jobrunner worker .* starting")
        self.procs[index] = wp

    async def kill(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.proc.returncode is None:
            proc.proc.send_signal(signal.SIGKILL)
            await proc.wait()

    def alive(self) -> list[WorkerProcess]:
        return [p for p in self.procs if p is not None and p.proc.returncode is None]


@contextlib.asynccontextmanager
async def _workers(dsn: str, schema: str) -> AsyncIterator[_Workers]:
    workers = _Workers(dsn, schema)
    async with workers.stack:
        yield workers


async def _check_invariants(
    runner: PostgresJobRunner, ids: list[uuid.UUID], retried_at: dict[uuid.UUID, Any]
) -> None:
    rows = {r["job_id"]: r for r in await fetch(runner, "SELECT * FROM {schema}.jobs")}
    for job_id in ids:
        row = rows[job_id]
        # Every job ends (or is held under a live lease; here: everything has ended).
        assert row["status"] in FINAL, row
        # Attempts never exceed the job's own policy.
        assert row["attempts"] <= row["max_attempts"] == POLICY.max_attempts, row
        if row["status"] == "completed":  # a handler ran: the first claim pinned the policy
            assert row["policy"]["max_attempts"] == POLICY.max_attempts
        attempts = await fetch(
            runner,
            "SELECT status::text AS status, retry_count, processed_at FROM {schema}.job_details "
            "WHERE job_id = %s AND step_name = 'attempt' ORDER BY processed_at, detail_id",
            job_id,
        )
        since = retried_at.get(job_id)
        current = [a for a in attempts if since is None or a["processed_at"] >= since]
        counts = [a["retry_count"] for a in current]
        # One accepted outcome per attempt: no attempt number recorded twice.
        assert len(counts) == len(set(counts)), (row, attempts)
        assert max(counts, default=0) <= row["attempts"], (row, attempts)
        completed = [a for a in current if a["status"] == "completed"]
        assert len(completed) == (1 if row["status"] == "completed" else 0), (row, attempts)
        if row["status"] in {"completed", "failed"}:
            # Every attempt of this generation has its outcome row (kill -9: lease expiry).
            assert sorted(counts) == list(range(1, row["attempts"] + 1)), (row, attempts)
        # A stale attempt wrote nothing after the job ended.
        late = await fetch(
            runner,
            "SELECT step_name FROM {schema}.job_details WHERE job_id = %s "
            "AND step_name <> 'attempt' AND processed_at > %s",
            job_id,
            row["completed_at"].replace(tzinfo=None) if row["completed_at"] else None,
        )
        assert row["completed_at"] is None or not late, (row, late)


@settings(
    # A handful in CI (each example starts two worker processes); more on demand.
    max_examples=int(os.environ.get("JOBRUNNER_LIFECYCLE_EXAMPLES", "6")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kinds=jobs_strategy, events=events_strategy)
def test_every_attempt_ends_in_one_recorded_outcome(
    jobrunner_dsn: str, kinds: list[list[str]], events: list[tuple[str, int]]
) -> None:
    asyncio.run(_scenario(jobrunner_dsn, kinds, events))


async def _scenario(dsn: str, kinds: list[list[str]], events: list[tuple[str, int]]) -> None:
    registry = JobHandlerRegistry()  # the producer needs no handler: the policy is pinned
    async with isolated_schema(dsn, prefix="jrlife") as schema:
        runner = PostgresJobRunner(
            dsn, schema=schema, registry=registry, require_registered=False, pool_size=4
        )
        await runner.start()
        try:
            async with _workers(dsn, schema) as workers:
                await workers.start(0)
                await workers.start(1)
                ids = []
                for per_attempt in kinds:
                    handle = await runner.schedule_job("behave", {"kinds": per_attempt})
                    ids.append(handle.job_id)
                retried_at: dict[uuid.UUID, Any] = {}
                for action, target in events:
                    if action == "cancel":
                        await runner.cancel_job(ids[target % len(ids)], reason="property")
                    elif action == "retry":
                        job_id = ids[target % len(ids)]
                        if await runner.retry_job(job_id):
                            now = await fetch(runner, "SELECT timezone('utc', now()) AS t")
                            retried_at[job_id] = now[0]["t"]
                    elif action == "kill":
                        await workers.kill(target)
                    else:
                        await workers.start(target)
                await workers.start(0)  # at least one worker to finish the rest

                async def states() -> list[str]:
                    for wp in workers.alive():
                        assert "Traceback" not in wp.output or "jobrunner" in wp.output
                    rows = await fetch(runner, "SELECT status::text AS s FROM {schema}.jobs")
                    return [r["s"] for r in rows]

                await eventually(
                    states,
                    lambda ss: all(s in FINAL for s in ss),
                    timeout=120,
                    what="every job final",
                )
                # The workers survived every behaviour (kill -9 aside).
                assert workers.alive()
                await _check_invariants(runner, ids, retried_at)
        finally:
            await runner.close()


# -- regressions ------------------------------------------------------------------------------
async def test_cancel_then_retry_on_one_worker_keeps_both_attempts_apart(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    """The old attempt cleans up for a while after its cancel; meanwhile the same worker runs
    the retry. The old attempt's exit must not end, release or fence the new one."""
    first_started = asyncio.Event()
    first_cleaning = asyncio.Event()
    second_running = asyncio.Event()
    release_cleanup = asyncio.Event()

    async def careful(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        if ctx.attempt == 1 and not second_running.is_set() and not first_started.is_set():
            first_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                first_cleaning.set()
                await release_cleanup.wait()  # clean-up takes a while
                raise
        second_running.set()
        await release_cleanup.wait()
        return {"attempt": ctx.attempt, "token": ctx.lease_token}

    registry.add("careful", careful)
    handle = await runner.schedule_job("careful", {})
    async with running_worker(runner, concurrency=4, heartbeat_interval=0.2, lease_seconds=1.5):
        await asyncio.wait_for(first_started.wait(), 30)
        assert await runner.cancel_job(handle.job_id, reason="operator")
        await asyncio.wait_for(first_cleaning.wait(), 30)
        assert await runner.retry_job(handle.job_id)
        await asyncio.wait_for(second_running.wait(), 30)
        row = await job_row(runner, handle.job_id)
        token = row["lease_token"]
        # Heartbeats go on while both run; the old attempt then finishes its clean-up.
        release_cleanup.set()
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED
    assert info.result == {"attempt": 1, "token": token}
    assert info.error is None
    final = await job_row(runner, handle.job_id)
    assert final["lease_token"] == token  # no re-claim cycle


async def test_sigterm_ends_a_worker_whose_handler_ignores_cancellation(
    runner: PostgresJobRunner, jobrunner_dsn: str, schema: str
) -> None:
    async with worker_process(
        jobrunner_dsn, schema, "--grace", "0.5", app="apps.hostile_app"
    ) as wp:
        await wp.wait_for_line(r"jobrunner worker .* starting")
        producer = PostgresJobRunner(
            jobrunner_dsn, schema=schema, registry=JobHandlerRegistry(), require_registered=False
        )
        await producer.start()
        try:
            handle = await producer.schedule_job("swallow-forever", {})
            await eventually(
                lambda: job_row(runner, handle.job_id),
                lambda r: r["status"] == "processing" and r["progress"] == 10,
                what="the handler running",
            )
            wp.proc.send_signal(signal.SIGTERM)
            # Grace 0.5 s, then the handler's cancel grace (5 s), then exit: never a hang.
            assert await wp.wait(timeout=60) == 0, wp.output
            assert "ignored cancellation" in wp.output
            row = await job_row(runner, handle.job_id)
            assert row["status"] == "queued" and row["attempts"] == 0  # handed back
        finally:
            await producer.close()


async def test_a_timed_out_attempt_closes_the_step_it_was_in(
    runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    async def stuck_in_step(ctx: JobContext, data: dict[str, Any]) -> None:
        async with ctx.step("upload"):
            await asyncio.Event().wait()

    registry.add("stuck-in-step", stuck_in_step, retry=RetryPolicy(max_attempts=1), timeout=0.3)
    handle = await runner.schedule_job("stuck-in-step", {})
    async with running_worker(runner):
        info = await runner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.FAILED
    steps = await fetch(
        runner,
        "SELECT status::text AS status, result FROM {schema}.job_details "
        "WHERE job_id = %s AND step_name = 'upload'",
        handle.job_id,
    )
    assert [s["status"] for s in steps] == ["failed"]
    assert steps[0]["result"]["type"].endswith("JobTimeoutError")


async def test_a_background_loop_that_ignores_cancellation_does_not_keep_a_worker_alive(
    runner: PostgresJobRunner, monkeypatch: Any
) -> None:
    """Shutdown waits a bounded time for the worker's own loops and names any that hang
    (the worker entry point then exits past them)."""
    from jobrunner._queue import _worker as queue_worker

    release = asyncio.Event()

    async def stubborn_rescue_loop(self: Any) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores the worker's cancellation until the test ends

    monkeypatch.setattr(queue_worker, "_LOOP_STOP_TIMEOUT", 0.5)
    monkeypatch.setattr(queue_worker.QueueWorker, "_rescue_loop", stubborn_rescue_loop)
    try:
        async with running_worker(runner) as worker:
            pass
        assert worker.stuck_tasks == ["jobrunner-rescue"]  # type: ignore[attr-defined]
    finally:
        release.set()
