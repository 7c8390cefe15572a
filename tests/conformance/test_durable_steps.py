"""Conformance: durable steps (``ctx.run_step``), the same on every backend.

A completed step's result is stored in its ``job_details`` row before ``run_step`` returns and
every later attempt of the job gets it back without calling the function; a step that raised
runs again on the next attempt; names are unique within a job; a stale attempt can never
record a step. Each step function counts its calls in a ledger (the handlers of every backend
run in this process, so a counter is the ledger; tests/test_durable_steps_kill.py counts in a
table across worker processes).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import uuid
from typing import Any

import pytest
import tenacity

from jobrunner import (
    DuplicateStepError,
    InvalidArgumentError,
    JobContext,
    JobStatus,
    NonRetryable,
    RetryPolicy,
    StepFencedError,
    StepInfo,
    SyncJobContext,
)

from .conftest import Backend

FAST = RetryPolicy(max_attempts=3, initial_interval=0.05, max_interval=0.1, jitter=0.0)
LEASE = 1.0


async def _steps(backend: Backend, job_id: uuid.UUID, name: str | None = None) -> list[StepInfo]:
    details = await backend.runner.get_job_details(job_id)
    assert details is not None
    return [s for s in details.steps if s.step_name != "attempt" and name in (None, s.step_name)]


def _rows(steps: list[StepInfo]) -> list[tuple[str, JobStatus, int, bool]]:
    return [(s.step_name, s.status, s.retry_count, s.durable) for s in steps]


async def test_a_completed_step_is_not_run_again_by_a_later_attempt(backend: Backend) -> None:
    ledger: collections.Counter[str] = collections.Counter()

    async def charge(order_id: str, *, amount: int) -> dict[str, Any]:
        ledger["charge"] += 1
        return {"charge_id": f"ch-{order_id}", "amount": amount, "as_tuple": (1, 2)}

    def send_receipt(charge_id: str) -> str:  # a plain function: runs in a thread
        ledger["email"] += 1
        return f"sent {charge_id}"

    seen: list[Any] = []

    async def checkout(ctx: JobContext, data: dict[str, Any]) -> Any:
        charged = await ctx.run_step("charge-card", charge, data["order"], amount=5)
        sent = await ctx.run_step("send-receipt", send_receipt, charged["charge_id"])
        seen.append((ctx.attempt, charged, sent))
        if ctx.attempt < 3:
            raise RuntimeError("a later step failed")
        return {"charged": charged, "sent": sent}

    backend.registry.add("checkout", checkout, retry=FAST)
    handle = await backend.runner.schedule_job("checkout", {"order": "o-1"})
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 3
    assert ledger == {"charge": 1, "email": 1}
    charged = {"charge_id": "ch-o-1", "amount": 5, "as_tuple": [1, 2]}
    # The attempt that ran the function gets the stored form too (a JSON round trip).
    assert seen == [(n, charged, "sent ch-o-1") for n in (1, 2, 3)]
    assert info.result == {"charged": charged, "sent": "sent ch-o-1"}
    steps = await _steps(backend, handle.job_id)
    assert _rows(steps) == [
        ("charge-card", JobStatus.COMPLETED, 1, True),
        ("send-receipt", JobStatus.COMPLETED, 1, True),
    ]
    assert steps[0].result == charged
    assert steps[0].metadata["tries"] == 1


async def test_a_step_that_raised_runs_again_on_the_next_attempt(backend: Backend) -> None:
    ledger: collections.Counter[str] = collections.Counter()

    async def render(cycle: str) -> list[str]:
        ledger["render"] += 1
        return [f"{cycle}-inv-1", f"{cycle}-inv-2"]

    async def zip_invoices(files: list[str]) -> str:
        ledger["zip"] += 1
        if ledger["zip"] == 1:
            raise ConnectionError("storage unreachable")
        return f"{len(files)} files.zip"

    async def invoices(ctx: JobContext, data: dict[str, Any]) -> str:
        files = await ctx.run_step("render", render, data["cycle"])
        return str(await ctx.run_step("zip", zip_invoices, files))

    backend.registry.add("invoices", invoices, retry=FAST)
    handle = await backend.runner.schedule_job("invoices", {"cycle": "2024-05"})
    [info] = await backend.run(handle)
    assert (info.status, info.result, info.attempts) == (JobStatus.COMPLETED, "2 files.zip", 2)
    assert ledger == {"render": 1, "zip": 2}
    steps = await _steps(backend, handle.job_id)
    assert _rows(steps) == [
        ("render", JobStatus.COMPLETED, 1, True),
        ("zip", JobStatus.FAILED, 1, True),  # the failed row stays as history
        ("zip", JobStatus.COMPLETED, 2, True),
    ]
    assert steps[1].result["type"] == "ConnectionError"
    assert steps[2].result == "2 files.zip"


async def test_a_step_name_is_unique_within_a_job(backend: Backend) -> None:
    ledger: collections.Counter[str] = collections.Counter()
    errors: list[BaseException] = []

    async def email(to: str) -> str:
        ledger[to] += 1
        return to

    async def twice(ctx: JobContext, data: dict[str, Any]) -> str:
        await ctx.run_step("email", email, "a@example.com")
        try:
            await ctx.run_step("email", email, "b@example.com")
        except DuplicateStepError as exc:
            errors.append(exc)
        async with ctx.step("email"):  # a history step of the same name is another thing
            pass
        return "done"

    backend.registry.add("twice", twice)
    handle = await backend.runner.schedule_job("twice")
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert ledger == {"a@example.com": 1}
    [error] = errors
    assert error.name == "email"  # type: ignore[attr-defined]
    assert _rows(await _steps(backend, handle.job_id)) == [
        ("email", JobStatus.COMPLETED, 1, True),
        ("email", JobStatus.COMPLETED, 1, False),
    ]


async def test_a_step_retries_transient_errors_within_the_attempt(backend: Backend) -> None:
    ledger: collections.Counter[str] = collections.Counter()

    async def flaky_smtp(kind: str) -> str:
        ledger[kind] += 1
        if ledger[kind] < 3:
            raise ConnectionError("smtp busy")
        return f"{kind} sent"

    async def hopeless(kind: str) -> str:
        ledger[kind] += 1
        raise NonRetryable("no such mailbox")

    policy = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.02, jitter=0.0)
    with_tenacity = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_fixed(0.01),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        reraise=True,
    )

    async def mail(ctx: JobContext, data: dict[str, Any]) -> list[str]:
        sent = [
            await ctx.run_step("policy", flaky_smtp, "policy", retry=policy),
            await ctx.run_step("tenacity", flaky_smtp, "tenacity", retry=with_tenacity),
        ]
        try:
            await ctx.run_step("hopeless", hopeless, "hopeless", retry=policy)
        except NonRetryable:
            sent.append("gave up")
        return sent

    backend.registry.add("mail", mail)
    handle = await backend.runner.schedule_job("mail")
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == ["policy sent", "tenacity sent", "gave up"]
    assert info.attempts == 1
    assert ledger == {"policy": 3, "tenacity": 3, "hopeless": 1}  # NonRetryable: no retry
    steps = {s.step_name: s for s in await _steps(backend, handle.job_id)}
    assert steps["policy"].metadata["tries"] == 3
    assert steps["hopeless"].status is JobStatus.FAILED


async def test_an_unstorable_step_result_fails_the_step_for_good(backend: Backend) -> None:
    ledger: collections.Counter[str] = collections.Counter()

    async def opaque() -> object:
        ledger["opaque"] += 1
        return object()

    async def job(ctx: JobContext, data: dict[str, Any]) -> None:
        await ctx.run_step("opaque", opaque)

    backend.registry.add("opaque", job, retry=FAST)
    handle = await backend.runner.schedule_job("opaque")
    [info] = await backend.run(handle)
    assert info.status is JobStatus.FAILED
    assert info.attempts == 1  # NonRetryable: retrying would not make it storable
    assert info.error is not None
    assert "step 'opaque'" in info.error.message
    assert "not JSON-serialisable" in info.error.message
    [step] = await _steps(backend, handle.job_id)
    assert (step.status, step.durable) == (JobStatus.FAILED, True)


async def test_sync_handlers_run_durable_steps_too(backend: Backend) -> None:
    ledger: collections.Counter[str] = collections.Counter()
    threads: dict[str, int] = {}
    errors: list[BaseException] = []

    def close_cycle(cycle: str) -> dict[str, Any]:
        ledger["close"] += 1
        threads["close"] = threading.get_ident()
        return {"cycle": cycle, "total": 1200}

    async def notify(total: int) -> str:  # an async step function in a sync handler
        ledger["notify"] += 1
        await asyncio.sleep(0)
        return f"notified {total}"

    def flaky(kind: str) -> str:
        ledger[kind] += 1
        if ledger[kind] < 2:
            raise ConnectionError("busy")
        return kind

    def billing(ctx: SyncJobContext, data: dict[str, Any]) -> Any:
        # Per attempt: the second one may run on another thread of the pool.
        threads[f"handler-{ctx.attempt}"] = threading.get_ident()
        closed = ctx.run_step("close-cycle", close_cycle, data["cycle"])
        note = ctx.run_step("notify", notify, closed["total"])
        retried = ctx.run_step(
            "flaky", flaky, "flaky", retry=RetryPolicy(max_attempts=2, initial_interval=0.01)
        )
        try:
            ctx.run_step("notify", notify, 0)
        except DuplicateStepError as exc:
            errors.append(exc)
        if ctx.attempt < 2:
            raise RuntimeError("fails after the steps")
        return [closed, note, retried]

    backend.registry.add("billing", billing, retry=FAST)
    handle = await backend.runner.schedule_job("billing", {"cycle": "2024-05"})
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == [{"cycle": "2024-05", "total": 1200}, "notified 1200", "flaky"]
    assert ledger == {"close": 1, "notify": 1, "flaky": 2}
    # A plain step runs in the thread of the handler that ran it (the first attempt; the
    # second finds it recorded).
    assert threads["close"] == threads["handler-1"]
    assert len(errors) == 2  # one per attempt
    assert _rows(await _steps(backend, handle.job_id)) == [
        ("close-cycle", JobStatus.COMPLETED, 1, True),
        ("notify", JobStatus.COMPLETED, 1, True),
        ("flaky", JobStatus.COMPLETED, 1, True),
    ]


@pytest.mark.requires("dead_worker")
async def test_a_stale_attempt_can_never_record_a_step(backend: Backend) -> None:
    """An attempt whose lease was lost while its step ran: the result is refused, the step
    raises, and the job's next attempt runs the step (and records it) itself."""
    ledger: collections.Counter[str] = collections.Counter()
    stale: list[bool] = []

    async def charge(order_id: str) -> str:
        ledger["charge"] += 1
        if not stale:
            # The stale attempt: its lease runs out and another attempt takes the job while
            # the function runs (a paused process, a partition).
            stale.append(True)
            assert await backend.expire_leases(LEASE) == 1
        return f"charged {order_id}"

    async def checkout(ctx: JobContext, data: dict[str, Any]) -> str:
        return str(await ctx.run_step("charge", charge, data["order"]))

    backend.registry.add("checkout", checkout, retry=FAST)
    handle = await backend.runner.schedule_job("checkout", {"order": "o-7"})
    _, ctx = await backend.dead_worker(LEASE)
    with pytest.raises(StepFencedError):
        await ctx.run_step("charge", charge, "o-7")
    assert ctx.is_cancelled()
    assert ledger == {"charge": 1}
    # Nothing more of the stale attempt reaches the job: not even a lookup.
    with pytest.raises(StepFencedError):
        await ctx.run_step("other", charge, "o-8")
    assert ledger == {"charge": 1}
    [row] = await _steps(backend, handle.job_id)
    assert (row.status, row.durable) == (JobStatus.FAILED, True)  # closed by the rescue

    [info] = await backend.run(handle)
    assert (info.status, info.result, info.attempts) == (JobStatus.COMPLETED, "charged o-7", 2)
    assert ledger == {"charge": 2}
    assert _rows(await _steps(backend, handle.job_id)) == [
        ("charge", JobStatus.FAILED, 1, True),
        ("charge", JobStatus.COMPLETED, 2, True),
    ]


async def test_bad_arguments_are_refused_before_anything_runs(backend: Backend) -> None:
    refused: list[str] = []

    async def nothing() -> None:
        raise AssertionError("must not run")

    async def job(ctx: JobContext, data: dict[str, Any]) -> int:
        for name, fn, retry in [
            ("", nothing, None),
            ("x" * 201, nothing, None),
            ("nul\x00", nothing, None),
            ("not-callable", 42, None),
            ("bad-retry", nothing, 3),
        ]:
            try:
                await ctx.run_step(name, fn, retry=retry)  # type: ignore[arg-type]
            except InvalidArgumentError:
                refused.append(name)
        return len(refused)

    backend.registry.add("bad", job)
    handle = await backend.runner.schedule_job("bad")
    [info] = await backend.run(handle)
    assert info.status is JobStatus.COMPLETED
    assert info.result == 5
    assert await _steps(backend, handle.job_id) == []
