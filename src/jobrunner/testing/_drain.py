"""drain / adrain: run everything that is due to completion, in process, for a test."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from jobrunner._errors import InvalidArgumentError, JobRunnerError, JobTimeoutError
from jobrunner._runner import JobRunner
from jobrunner._sync import SyncJobRunner
from jobrunner._validation import as_aware_datetime
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._schedule_ticks import fire_due
from jobrunner.registry import DEFAULT_QUEUE
from jobrunner.testing._clock import FakeClock
from jobrunner.testing._memory import InMemoryJobRunner
from jobrunner.testing._worker import running_worker

__all__ = ["DrainError", "adrain", "drain"]

logger = logging.getLogger("jobrunner.testing")

Until = datetime | timedelta | None


class DrainError(JobRunnerError):
    """Draining did not finish: too many attempts (a job keeps re-enqueueing itself)."""


async def adrain(
    runner: Any,
    *,
    until: Until = None,
    timeout: float = 60.0,
    max_attempts: int = 10_000,
    concurrency: int = 10,
) -> int:
    """Run every due job to a final state, in this process; return the attempts run.

    Failed attempts that wait for their backoff are run too: on an :class:`InMemoryJobRunner`
    with a :class:`FakeClock` the clock jumps to their due time; on a real clock (and on
    PostgreSQL) their due time is moved to now. Jobs enqueued by handlers while draining are
    drained as well. Jobs scheduled for later stay put unless ``until`` covers them.

    Args:
        runner: An :class:`InMemoryJobRunner`, a ``PostgresJobRunner`` or a
            :class:`~jobrunner.SyncJobRunner` wrapping one (then use :func:`drain`).
        until: Also run what falls due up to this time (a datetime, or a timedelta from now):
            jobs scheduled for later and recurring schedule ticks. On the in-memory runner the
            fake clock steps through each due time in order and ends at ``until``.
        timeout: Seconds before giving up with :class:`~jobrunner.JobTimeoutError` (a handler
            that hangs).
        max_attempts: Attempts after which :class:`DrainError` is raised (runaway jobs).
        concurrency: Handlers run at once on PostgreSQL (in memory they run one at a time,
            in claim order, so tests are deterministic).

    Raises:
        JobTimeoutError: ``timeout`` passed first (also a built-in ``TimeoutError``); the
            message lists what was still live.
        DrainError: more than ``max_attempts`` attempts ran.
        InvalidArgumentError: an unsupported runner or argument.
    """
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidArgumentError("max_attempts must be a positive integer")
    if until is not None and not isinstance(until, timedelta):
        as_aware_datetime(until, "until")
    if isinstance(runner, SyncJobRunner):
        raise InvalidArgumentError("a SyncJobRunner is drained with drain(runner), not adrain")
    if isinstance(runner, InMemoryJobRunner):
        return await _drain_memory(runner, until, timeout, max_attempts)
    if isinstance(runner, PostgresJobRunner):
        return await _drain_postgres(runner, until, timeout, max_attempts, concurrency)
    custom = getattr(runner, "drain", None)
    if isinstance(runner, JobRunner) and callable(custom):
        result = await custom(until=until, timeout=timeout)
        return int(result or 0)
    raise InvalidArgumentError(
        f"adrain() supports InMemoryJobRunner and PostgresJobRunner, not {type(runner).__name__}"
    )


def drain(runner: Any, **options: Any) -> int:
    """Blocking :func:`adrain` for sync tests; options as :func:`adrain`.

    Works with an :class:`InMemoryJobRunner` (run on a private event loop) and with a
    :class:`~jobrunner.SyncJobRunner` (run on its loop).

    Raises:
        InvalidArgumentError: called from inside a running event loop (use ``await adrain``).
    """
    if isinstance(runner, SyncJobRunner):
        return runner._call(adrain(runner.runner, **options))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(adrain(runner, **options))
    raise InvalidArgumentError("drain() blocks; inside async code use: await adrain(runner)")


# -- in memory -------------------------------------------------------------------------------
async def _drain_memory(
    runner: InMemoryJobRunner, until: Until, timeout: float, max_attempts: int
) -> int:
    clock = runner.clock
    target: datetime | None = None
    if until is not None:
        if not isinstance(clock, FakeClock):
            raise InvalidArgumentError(
                "adrain(until=...) needs an InMemoryJobRunner on a FakeClock"
            )
        target = clock.now() + until if isinstance(until, timedelta) else until.astimezone(UTC)
    ran = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await runner.run_next():
                    ran += 1
                    if ran > max_attempts:
                        raise DrainError(
                            f"drain ran more than {max_attempts} attempts; does a job keep "
                            "scheduling itself?"
                        )
                    continue
                if runner.running_count:
                    # A worker or an eager call is running something: wait for its outcome.
                    await runner.wait_for_change(1.0)
                    continue
                retry_at = runner.next_due_at(retries_only=True)
                if retry_at is not None:
                    if isinstance(clock, FakeClock):
                        clock.set(max(retry_at, clock.now()))
                    else:
                        runner.make_retries_due()
                    continue
                if target is not None and isinstance(clock, FakeClock):
                    upcoming = [t for t in (runner.next_due_at(), runner.next_tick_at()) if t]
                    step = min(upcoming) if upcoming else None
                    if step is not None and step <= target:
                        clock.set(max(step, clock.now()))
                        continue
                    if clock.now() < target:
                        clock.set(target)
                        continue
                return ran
    except TimeoutError:
        live = [
            f"{j.name} {j.job_id} ({j.status.value})"
            for j in runner._jobs.values()
            if j.status.value in ("queued", "processing", "retrying")
        ]
        raise JobTimeoutError(
            f"drain did not finish in {timeout:g} s; still live: {', '.join(live) or 'none'}"
        ) from None


# -- PostgreSQL ------------------------------------------------------------------------------
async def _drain_postgres(
    runner: PostgresJobRunner,
    until: Until,
    timeout: float,
    max_attempts: int,
    concurrency: int,
) -> int:
    await runner.start()
    # A fixed horizon: a moving one would keep admitting new ticks of a fast schedule.
    fixed = None if until is None else _horizon(until)
    ran = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                queues = await _live_queues(runner)
                async with running_worker(
                    runner,
                    concurrency=concurrency,
                    queues=sorted(queues),
                    poll_interval=0.5,
                    shutdown_grace=5.0,
                ) as worker:
                    try:
                        finished = await _wait_idle(runner, fixed, queues, worker, max_attempts)
                    finally:
                        ran += getattr(worker, "claimed_total", 0)
                if finished:
                    return ran
                # A handler enqueued into a queue the worker does not claim: widen and go on.
    except TimeoutError:
        raise JobTimeoutError(
            f"drain did not finish in {timeout:g} s; still live: {await _describe_live(runner)}"
        ) from None


async def _live_queues(runner: PostgresJobRunner) -> set[str]:
    queues = {spec.queue for spec in runner.registry} | {DEFAULT_QUEUE}
    async with runner.db.connection() as conn:
        cur = await conn.execute(runner.db.queries.testing_live_queues)
        queues |= {row["queue"] for row in await cur.fetchall()}
    return queues


async def _wait_idle(
    runner: PostgresJobRunner,
    fixed: datetime | None,
    queues: set[str],
    worker: Any,
    max_attempts: int,
) -> bool:
    """Poll (no event reports "nothing left") until no due or running job remains.

    Returns ``False`` when live jobs sit in queues the worker does not claim.
    """
    q = runner.db.queries
    delay = 0.01
    while True:
        horizon = fixed or datetime.now(UTC)
        await _fire_schedules(runner, fixed)
        async with runner.db.connection() as conn:
            # Waiting retries (and, with until=, jobs due by then) become due now.
            cur = await conn.execute(q.testing_make_due, {"horizon": horizon})
            if cur.rowcount:
                await conn.execute(
                    runner.db.queries.notify_jobs,
                    {"channel": runner.db.channel_jobs, "payload": "drain"},
                )
            cur = await conn.execute(q.testing_live_counts, {"horizon": horizon})
            live = {row["queue"]: row["n"] for row in await cur.fetchall()}
        if not live:
            return True
        if set(live) - queues:
            return False
        if getattr(worker, "claimed_total", 0) > max_attempts:
            raise DrainError(
                f"drain ran more than {max_attempts} attempts; does a job keep scheduling itself?"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def _horizon(until: Until) -> datetime:
    now = datetime.now(UTC)
    if until is None:
        return now
    if isinstance(until, timedelta):
        return now + until
    return until


async def _fire_schedules(runner: PostgresJobRunner, until: datetime | None) -> None:
    """Fire recurring ticks due now; with ``until``, step through each tick up to it.

    Stepping tick by tick (rather than one call at ``until``) makes every tick on time, as on
    the in-memory runner, so ``missed_ticks`` does not collapse them. Jobs of future ticks are
    ``pending`` at their tick and made due by the caller.
    """
    next_tick = runner.db.queries.testing_next_tick
    async with runner.db.connection() as conn:
        while len(await fire_due(conn, runner.schema)) >= 100:
            pass
        for _ in range(100_000):
            if until is None:
                return
            cur = await conn.execute(next_tick)
            row = await cur.fetchone()
            at = None if row is None else row["at"]
            if at is None or at > until:
                return
            await fire_due(conn, runner.schema, at)


async def _describe_live(runner: PostgresJobRunner) -> str:
    try:
        async with runner.db.connection() as conn:
            cur = await conn.execute(runner.db.queries.testing_describe_live)
            rows = await cur.fetchall()
    except Exception:  # noqa: BLE001 - best effort for an error message
        return "(unknown)"
    return ", ".join(f"{r['type']} {r['job_id']} ({r['status']})" for r in rows) or "none"
