"""Run one handler directly, with a fake context that records progress and steps."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from jobrunner._context import PROGRESS_INTERVAL, DurableStart, JobContext, SyncJobContext
from jobrunner._errors import InvalidArgumentError
from jobrunner._runner import TenantArg
from jobrunner._validation import as_data, as_tenant, as_uuid
from jobrunner.registry import DEFAULT_QUEUE, HandlerSpec, JobHandlerRegistry

__all__ = ["HandlerRun", "RecordedStep", "arun_handler", "run_handler"]


@dataclass
class RecordedStep:
    """A ``ctx.step(...)`` block or ``ctx.run_step(...)`` call the handler ran."""

    name: str
    status: str
    """``"processing"`` (still open), ``"completed"`` or ``"failed"``."""
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass
class HandlerRun:
    """What :func:`run_handler` saw.

    Attributes:
        result: What the handler returned (``None`` when it raised and ``raises=False``).
        error: The exception it raised, when ``raises=False``.
        progress: Every ``set_progress`` call as ``(percent, message)``, unthrottled.
        steps: Every step, in the order they started.
        ctx: The context the handler got.
    """

    result: Any = None
    error: BaseException | None = None
    progress: list[tuple[int, str | None]] = field(default_factory=list)
    steps: list[RecordedStep] = field(default_factory=list)
    ctx: JobContext | None = None

    @property
    def last_progress(self) -> int | None:
        """The last percentage reported, or ``None``."""
        return self.progress[-1][0] if self.progress else None

    @property
    def step_names(self) -> list[str]:
        """Names of the steps in order."""
        return [s.name for s in self.steps]


class _RecordingSink:
    def __init__(self, run: HandlerRun) -> None:
        self.run = run
        self.by_id: dict[uuid.UUID, RecordedStep] = {}

    async def save_progress(self, ctx: JobContext, progress: int, message: str | None) -> None:
        self.run.progress.append((progress, message))

    async def start_step(self, ctx: JobContext, name: str) -> uuid.UUID:
        detail_id = uuid.uuid4()
        step = RecordedStep(name=name, status="processing")
        self.by_id[detail_id] = step
        self.run.steps.append(step)
        return detail_id

    async def finish_step(
        self, ctx: JobContext, detail_id: uuid.UUID, *, ok: bool, result: Any, error: Any
    ) -> None:
        step = self.by_id[detail_id]
        step.status = "completed" if ok else "failed"
        step.result = result if ok else None
        step.error = None if ok else error

    async def begin_durable_step(self, ctx: JobContext, name: str) -> DurableStart:
        # One attempt, no earlier ones: nothing is stored yet.
        return DurableStart("started", detail_id=await self.start_step(ctx, name))

    async def complete_durable_step(
        self, ctx: JobContext, detail_id: uuid.UUID, result_json: str | None, *, tries: int
    ) -> bool:
        result = None if result_json is None else json.loads(result_json)
        await self.finish_step(ctx, detail_id, ok=True, result=result, error=None)
        return True


def _spec_for(target: str | Callable[..., Any], registry: JobHandlerRegistry | None) -> HandlerSpec:
    if isinstance(target, str):
        return (registry or JobHandlerRegistry.default()).get(target)
    if not callable(target):
        raise InvalidArgumentError("run_handler needs a job name or a handler function")
    for spec in registry or JobHandlerRegistry.default():
        if spec.handler is target:
            return spec
    name = getattr(target, "__name__", "handler")
    return HandlerSpec(name=name, handler=target)


async def arun_handler(
    handler: str | Callable[..., Any],
    data: Mapping[str, Any] | None = None,
    *,
    tenant: TenantArg = None,
    attempt: int = 1,
    max_attempts: int | None = None,
    job_id: uuid.UUID | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    registry: JobHandlerRegistry | None = None,
    cancelled: bool = False,
    timeout: float | None = None,
    raises: bool = True,
) -> HandlerRun:
    """Call one handler once with a fake context, without a runner or a database.

    Args:
        handler: A registered job name, or the handler function itself.
        data: The payload (validated like ``schedule_job`` would).
        tenant: ``ctx.tenant``.
        attempt: ``ctx.attempt`` (test your handler's behaviour on a retry).
        max_attempts: ``ctx.max_attempts`` (default: the handler's retry policy).
        job_id: ``ctx.job_id`` (default: a fresh UUID).
        metadata: ``ctx.metadata``.
        registry: Where to look the name up (default: the process-wide registry).
        cancelled: Start with ``ctx.is_cancelled()`` true.
        timeout: Apply this timeout (default: none, unlike a real run).
        raises: Re-raise what the handler raises (default); else record it in ``error``.

    Returns:
        A :class:`HandlerRun` with the result, every progress report and every step.
    """
    spec = _spec_for(handler, registry)
    payload = json.loads(json.dumps(as_data(data)))
    if not isinstance(attempt, int) or attempt < 1:
        raise InvalidArgumentError("attempt must be a positive integer")
    run = HandlerRun()
    sink = _RecordingSink(run)
    ticks = itertools.count(1)
    ctx = JobContext(
        job_id=uuid.uuid4() if job_id is None else as_uuid(job_id, "job_id"),
        name=spec.name,
        tenant=as_tenant(tenant),
        attempt=attempt,
        max_attempts=max_attempts or spec.retry.max_attempts,
        queue=spec.queue or DEFAULT_QUEUE,
        metadata=json.loads(json.dumps(as_data(metadata, "metadata"))),
        _sink=sink,
        # Every report is recorded: the throttle sees time jump past its interval each call.
        _clock=lambda: next(ticks) * PROGRESS_INTERVAL * 2,
    )
    if cancelled:
        ctx.mark_cancelled()
    run.ctx = ctx
    try:
        async with asyncio.timeout(timeout):
            if spec.is_async:
                run.result = await spec.handler(ctx, payload)
            else:
                loop = asyncio.get_running_loop()
                run.result = await loop.run_in_executor(
                    None, cast(Callable[..., Any], spec.handler), SyncJobContext(ctx, loop), payload
                )
    except Exception as exc:
        if raises:
            raise
        run.error = exc
    finally:
        ctx.cancel_pending_flush()
    return run


def run_handler(
    handler: str | Callable[..., Any],
    data: Mapping[str, Any] | None = None,
    **options: Any,
) -> HandlerRun:
    """Blocking :func:`arun_handler` for sync tests; same arguments.

    Raises:
        InvalidArgumentError: called inside a running event loop (use ``await arun_handler``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_handler(handler, data, **options))
    raise InvalidArgumentError(
        "run_handler() blocks; inside async code use: await arun_handler(...)"
    )
