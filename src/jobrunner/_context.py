"""What a handler receives as ``ctx``: identity, progress, steps and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar, Unpack

import tenacity

from jobrunner._errors import (
    DuplicateStepError,
    InvalidArgumentError,
    NotSupportedError,
    StepFencedError,
    UnknownOptionError,
)
from jobrunner._limits import MAX_RESULT_BYTES
from jobrunner._models import ScheduledJob
from jobrunner._options import EnqueueOptions, option_names
from jobrunner._outcome import decide_failure, describe_error, storable_json
from jobrunner._policy import RetryPolicy
from jobrunner._telemetry import step_span

__all__ = [
    "DURABLE_KEY",
    "DependencySink",
    "DurableStart",
    "JobContext",
    "JobSink",
    "StepHandle",
    "StepRetry",
    "SyncJobContext",
]

#: The ``job_details.metadata`` key that marks a durable step's row (``{"durable": true}``);
#: rows of ``ctx.step`` do not have it.
DURABLE_KEY = "durable"

#: A durable step's retry policy for transient errors within one attempt: jobrunner's
#: :class:`~jobrunner.RetryPolicy` or a tenacity ``Retrying`` / ``AsyncRetrying``.
StepRetry = RetryPolicy | tenacity.BaseRetrying

T = TypeVar("T")

#: Minimum seconds between two persisted progress updates of one job.
PROGRESS_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class DurableStart:
    """What a sink found when a durable step begins (``JobSink.begin_durable_step``)."""

    state: Literal["started", "stored", "fenced"]
    """``started``: a ``processing`` row was written (``detail_id``); ``stored``: an earlier
    attempt completed the step (``result``); ``fenced``: the attempt is over, nothing was
    written."""
    detail_id: uuid.UUID | None = None
    result: Any = None


class JobSink(Protocol):
    """Where a context reports to; each backend implements it (narrow on purpose)."""

    async def save_progress(self, ctx: JobContext, progress: int, message: str | None) -> None:
        """Persist progress for the job of ``ctx``."""

    async def start_step(self, ctx: JobContext, name: str) -> uuid.UUID:
        """Write a ``processing`` step row and return its detail id.

        Fenced by the attempt (``ctx.lease_token``): when the attempt is over, write nothing,
        call ``ctx.mark_cancelled()`` and return an id that matches no row.
        """

    async def finish_step(
        self, ctx: JobContext, detail_id: uuid.UUID, *, ok: bool, result: Any, error: Any
    ) -> None:
        """Mark a step row ``completed`` (with ``result``) or ``failed`` (with ``error``);
        a no-op once the attempt is over."""

    async def begin_durable_step(self, ctx: JobContext, name: str) -> DurableStart:
        """Look up durable step ``name`` of the job; when no attempt completed it, write a
        ``processing`` row marked durable (metadata ``{"durable": true}``).

        Fenced like :meth:`start_step`: when the attempt is over, read and write nothing,
        call ``ctx.mark_cancelled()`` and return ``fenced``.
        """

    async def complete_durable_step(
        self, ctx: JobContext, detail_id: uuid.UUID, result_json: str | None, *, tries: int
    ) -> bool:
        """Mark a durable step row ``completed`` with ``result_json`` (storable JSON text) and
        commit it; ``False`` (nothing written) when the attempt is over."""


class DependencySink(Protocol):
    """What a sink offers for :meth:`JobContext.dependency_results` and
    :meth:`JobContext.schedule_job` (a sink without it makes them raise
    :class:`~jobrunner.NotSupportedError`)."""

    async def dependency_results(self, ctx: JobContext) -> dict[uuid.UUID, Any]:
        """``{job_id: result}`` of the job's dependencies."""

    async def schedule_child(
        self,
        ctx: JobContext,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """Enqueue a job recording ``ctx``'s job as its parent (same tenant)."""


@dataclass
class StepHandle:
    """Returned by ``ctx.step(...)``; set ``result`` to store it on the step row."""

    name: str
    detail_id: uuid.UUID
    result: Any = None
    #: False when nothing was written (no sink, or the attempt was already over): the block
    #: still runs, its outcome is not recorded.
    recorded: bool = field(default=True, repr=False, compare=False)


@dataclass(eq=False)
class JobContext:
    """The context of one attempt of one job, passed to ``async def`` handlers.

    Attributes:
        job_id: The job's id.
        name: The job name.
        tenant: The tenant the job belongs to.
        attempt: Attempt number, 1 for the first run.
        max_attempts: Attempts the retry policy allows.
        queue: The queue the job was claimed from.
        metadata: The job's metadata (read-only copy).
        schedule_id: The recurring schedule that fired this job, if any.
    """

    job_id: uuid.UUID
    name: str
    tenant: uuid.UUID
    attempt: int
    max_attempts: int = 1
    queue: str = "default"
    metadata: dict[str, Any] = field(default_factory=dict)
    schedule_id: uuid.UUID | None = None
    lease_token: int = field(default=0, repr=False)
    _sink: JobSink | None = field(default=None, repr=False)
    _cancelled: asyncio.Event | None = field(default=None, repr=False)
    _cancel_flag: bool = field(default=False, repr=False)
    _last_progress_at: float = field(default=0.0, repr=False)
    _pending_progress: tuple[int, str | None] | None = field(default=None, repr=False)
    _flush_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _durable_names: set[str] = field(default_factory=set, repr=False)

    # -- cancellation -----------------------------------------------------------------------
    def is_cancelled(self) -> bool:
        """Whether the job was cancelled; long sync handlers should poll this."""
        return self._cancel_flag

    def mark_cancelled(self) -> None:
        """Called by the backend when a cancel request arrives."""
        self._cancel_flag = True
        if self._cancelled is not None:
            self._cancelled.set()

    # -- progress ---------------------------------------------------------------------------
    async def set_progress(self, progress: int | float, message: str | None = None) -> None:
        """Record progress (0-100) with an optional message.

        Writes are throttled to one per ``PROGRESS_INTERVAL`` seconds per job; the latest value
        always reaches the database.
        """
        pct = _check_progress(progress, message)
        now = self._clock()
        if self._sink is None or self._cancel_flag:
            # A cancelled attempt (cancel, lost lease, timeout) must not race its own failure
            # record with a late progress write.
            return
        if now - self._last_progress_at >= PROGRESS_INTERVAL or pct == 100:
            self._last_progress_at = now
            self._pending_progress = None
            await self._sink.save_progress(self, pct, message)
            return
        self._pending_progress = (pct, message)
        if self._flush_task is None or self._flush_task.done():
            delay = PROGRESS_INTERVAL - (now - self._last_progress_at)
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_later(delay))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(max(delay, 0))
        await self.flush_progress()

    async def flush_progress(self) -> None:
        """Write a throttled progress value now (the backend calls this when an attempt ends)."""
        pending, self._pending_progress = self._pending_progress, None
        if pending is not None and self._sink is not None and not self._cancel_flag:
            self._last_progress_at = self._clock()
            await self._sink.save_progress(self, pending[0], pending[1])

    def cancel_pending_flush(self) -> None:
        """Drop the delayed progress flush (the attempt ended)."""
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()

    # -- steps ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[StepHandle]:
        """Record a named step as a ``job_details`` row around the block.

        The row is ``processing`` while the block runs, then ``completed`` (with
        ``handle.result``) or ``failed`` (with the error); its ``retry_count`` is the attempt.

        Steps are fenced like progress: once the attempt is over (cancelled, timed out, its
        lease lost) a step writes nothing, and one started then raises
        ``asyncio.CancelledError``.
        """
        handle = await self._begin_step(name)
        if self._cancel_flag:
            raise asyncio.CancelledError(f"job {self.job_id} was cancelled; step {name!r} skipped")
        with step_span(name, job_name=self.name, job_id=self.job_id, attempt=self.attempt):
            try:
                yield handle
            except BaseException as exc:
                await asyncio.shield(self._end_step(handle, exc))
                raise
        await self._end_step(handle, None)

    async def _begin_step(self, name: str) -> StepHandle:
        """Write the ``processing`` row unless the attempt is over (then record nothing)."""
        if not isinstance(name, str) or not name or len(name) > 200 or "\x00" in name:
            raise InvalidArgumentError("step name must be a non-empty string (max 200 chars)")
        if self._sink is None or self._cancel_flag:
            return StepHandle(name=name, detail_id=uuid.uuid4(), recorded=False)
        detail_id = await self._sink.start_step(self, name)
        # A sink that finds the attempt fenced off marks this context cancelled.
        return StepHandle(name=name, detail_id=detail_id, recorded=not self._cancel_flag)

    async def _end_step(self, handle: StepHandle, exc: BaseException | None) -> None:
        """Close the step row; nothing once the attempt is over (its outcome is recorded)."""
        if self._sink is None or not handle.recorded or self._cancel_flag:
            return
        if exc is None:
            await self._sink.finish_step(
                self, handle.detail_id, ok=True, result=handle.result, error=None
            )
        else:
            await self._sink.finish_step(
                self, handle.detail_id, ok=False, result=None, error=_error_json(exc)
            )

    # -- durable steps ----------------------------------------------------------------------
    # -- dependencies and children ------------------------------------------------------------
    async def dependency_results(self) -> dict[uuid.UUID, Any]:
        """``{job_id: result}`` of the jobs this one depends on (``depends_on``).

        Each dependency maps to its stored result; one that failed or was cancelled (the job
        runs anyway with ``on_dependency_failure="run"``) maps to ``None``. Read from the
        store on each call (one query, whatever the number of dependencies).
        """
        return await _dependency_results(self)

    async def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a child job: it records this job as its parent (``get_job_details``
        lists it among ``children``) and belongs to this job's tenant.

        Takes the options of :meth:`~jobrunner.JobRunner.schedule_job` (``depends_on``
        included) and ``run_at`` for a later start. Not written in this attempt's
        transaction: a child enqueued by an attempt that then fails stays enqueued (enqueue
        it inside :meth:`run_step` to enqueue it once per job).

        Raises:
            InvalidArgumentError: a malformed argument, or another tenant.
            NotSupportedError: the backend cannot enqueue from a handler.
        """
        unknown = sorted(set(options) - _CHILD_OPTIONS)
        if unknown:
            raise UnknownOptionError(
                f"schedule_job() got unexpected keyword arguments: {', '.join(unknown)}"
            )
        return await _schedule_child(self, name, data, run_at, options)

    async def run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retry: StepRetry | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` as a durable step: once per job, its result stored.

        The first attempt that completes the step stores its result in the step's
        ``job_details`` row (committed before this returns); every later attempt of the same
        job gets the stored result back without calling ``fn``. A step whose function raised
        is run again by the next attempt (its ``failed`` row stays as history). Use
        :meth:`step` instead to only record a block in the job's history.

        ``fn`` may be ``async def`` (awaited here) or a plain function (run in a thread, in a
        copy of the caller's context variables, as plain ``def`` handlers are).

        Args:
            name: The step's name, unique within the job (1 to 200 characters, no NUL).
            fn: The function to run.
            *args: Positional arguments for ``fn``.
            retry: Retries of ``fn`` for transient errors within this attempt: a
                :class:`~jobrunner.RetryPolicy` (``max_attempts`` calls in all, its backoff,
                ``NonRetryable`` and ``non_retryable_errors`` end the step at once) or a
                tenacity ``Retrying`` / ``AsyncRetrying`` (its ``stop``, ``wait``, ``retry``
                and hooks are used; sleeps are asynchronous). ``None``: one call.
            **kwargs: Keyword arguments for ``fn`` (a keyword ``retry`` of ``fn`` itself must
                be bound with ``functools.partial``).

        Returns:
            The step's result as stored: the JSON round trip of what ``fn`` returned (tuples
            come back as lists), the same on the attempt that ran ``fn`` and on later ones.

        Raises:
            DuplicateStepError: A step of this name already ran in this attempt.
            StepFencedError: The attempt is over (cancelled, timed out, its lease lost): the
                step was not run, or ran and was not recorded; the handler should stop.
            NonRetryable: ``fn``'s result cannot be stored as JSON (or is over 64 MiB); the
                step is recorded as failed.
            InvalidArgumentError: ``name``, ``fn`` or ``retry`` is malformed.
            BaseException: Whatever ``fn`` raised (after the retries of ``retry``); the step
                is recorded as failed and runs again on the job's next attempt.
        """
        _check_step_call(name, fn, retry)
        start = await self._begin_durable(name)
        if start.state == "stored":
            return start.result
        with step_span(name, job_name=self.name, job_id=self.job_id, attempt=self.attempt):
            try:
                value, tries = await _call_async_with_retry(self, fn, args, kwargs, retry, None)
            except BaseException as exc:
                await asyncio.shield(self._fail_durable(start, exc))
                raise
            return await self._complete_durable(name, start, value, tries)

    async def _begin_durable(self, name: str) -> DurableStart:
        """Claim ``name`` for this attempt and look the step up (or start its row)."""
        if name in self._durable_names:
            raise DuplicateStepError(name)
        self._durable_names.add(name)
        if self._cancel_flag:
            raise StepFencedError(f"job {self.job_id}: the attempt is over; step {name!r} skipped")
        if self._sink is None:
            return DurableStart("started")
        start = await self._sink.begin_durable_step(self, name)
        if start.state == "fenced":
            self.mark_cancelled()
            raise StepFencedError(
                f"job {self.job_id}: attempt {self.attempt} no longer holds the job; "
                f"step {name!r} was not run"
            )
        return start

    async def _fail_durable(self, start: DurableStart, exc: BaseException) -> None:
        """Close the step's row as ``failed`` (nothing once the attempt is over)."""
        if self._sink is None or start.detail_id is None or self._cancel_flag:
            return
        await self._sink.finish_step(
            self, start.detail_id, ok=False, result=None, error=_error_json(exc)
        )

    async def _complete_durable(
        self, name: str, start: DurableStart, value: Any, tries: int
    ) -> Any:
        """Store the step's result; the result as it reads back."""
        try:
            text = storable_json(value, what=f"step {name!r}'s result", limit=MAX_RESULT_BYTES)
        except BaseException as problem:
            await asyncio.shield(self._fail_durable(start, problem))
            raise
        if self._sink is not None and start.detail_id is not None:
            recorded = not self._cancel_flag and await self._sink.complete_durable_step(
                self, start.detail_id, text, tries=tries
            )
            if not recorded:
                self.mark_cancelled()
                raise StepFencedError(
                    f"job {self.job_id}: attempt {self.attempt} no longer holds the job; "
                    f"step {name!r} ran but its result was not recorded"
                )
        return None if text is None else json.loads(text)


async def _dependency_results(ctx: JobContext) -> dict[uuid.UUID, Any]:
    sink = ctx._sink
    reader = getattr(sink, "dependency_results", None)
    if reader is None:
        raise NotSupportedError("this backend's handlers cannot read dependency results")
    results: dict[uuid.UUID, Any] = await reader(ctx)
    return results


async def _schedule_child(
    ctx: JobContext,
    name: str,
    data: Mapping[str, Any] | None,
    run_at: datetime | None,
    options: EnqueueOptions,
) -> ScheduledJob:
    scheduler = getattr(ctx._sink, "schedule_child", None)
    if scheduler is None:
        raise NotSupportedError("this backend's handlers cannot enqueue child jobs")
    handle: ScheduledJob = await scheduler(ctx, name, data, run_at, options)
    return handle


class SyncJobContext:
    """The context passed to plain ``def`` handlers: the same API as blocking calls.

    Handlers run in a worker thread; each call hands the work to the runner's event loop.
    """

    def __init__(self, inner: JobContext, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self.job_id = inner.job_id
        self.name = inner.name
        self.tenant = inner.tenant
        self.attempt = inner.attempt
        self.max_attempts = inner.max_attempts
        self.queue = inner.queue
        self.metadata = inner.metadata
        self.schedule_id = inner.schedule_id

    def _call(self, factory: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def is_cancelled(self) -> bool:
        """Whether the job was cancelled; poll this in long loops and return early."""
        return self._inner.is_cancelled()

    def set_progress(self, progress: int | float, message: str | None = None) -> None:
        """Record progress (0-100), throttled like the async form."""
        _check_progress(progress, message)
        self._call(lambda: self._inner.set_progress(progress, message))

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepHandle]:
        """Record a named step around the block (see :meth:`JobContext.step`).

        Once the attempt is over (cancelled, past its timeout, lease lost) the block still runs
        but nothing is written; ``is_cancelled()`` is then true.
        """
        inner = self._inner
        handle = self._call(lambda: inner._begin_step(name))
        with step_span(name, job_name=self.name, job_id=self.job_id, attempt=self.attempt):
            try:
                yield handle
            except BaseException as exc:
                error = exc
                self._call(lambda: inner._end_step(handle, error))
                raise
        self._call(lambda: inner._end_step(handle, None))

    def run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retry: StepRetry | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` as a durable step (see :meth:`JobContext.run_step`).

        Blocks until the step's result is stored. A plain function runs in the handler's own
        thread (thread-local resources, such as a Django connection, are the handler's); an
        ``async def`` one runs on the runner's event loop. Retry waits of a plain function
        end early with :class:`~jobrunner.StepFencedError` once the attempt is over.

        Args:
            name: The step's name, unique within the job.
            fn: The function to run.
            *args: Positional arguments for ``fn``.
            retry: Retries within this attempt (see :meth:`JobContext.run_step`).
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            The step's result as stored (a JSON round trip).

        Raises:
            DuplicateStepError: A step of this name already ran in this attempt.
            StepFencedError: The attempt is over; return from the handler.
            NonRetryable: ``fn``'s result cannot be stored as JSON.
            InvalidArgumentError: ``name``, ``fn`` or ``retry`` is malformed.
            BaseException: Whatever ``fn`` raised; the step runs again on the next attempt.
        """
        _check_step_call(name, fn, retry)
        inner = self._inner
        start = self._call(lambda: inner._begin_durable(name))
        if start.state == "stored":
            return start.result
        context = contextvars.copy_context()
        with step_span(name, job_name=self.name, job_id=self.job_id, attempt=self.attempt):
            try:
                if _is_async_callable(fn):
                    value, tries = self._call(
                        lambda: _call_async_with_retry(inner, fn, args, kwargs, retry, context)
                    )
                else:
                    value, tries = _call_sync_with_retry(inner, fn, args, kwargs, retry)
            except BaseException as exc:
                error = exc
                self._call(lambda: inner._fail_durable(start, error))
                raise
            return self._call(lambda: inner._complete_durable(name, start, value, tries))

    def dependency_results(self) -> dict[uuid.UUID, Any]:
        """``{job_id: result}`` of the job's dependencies (see
        :meth:`JobContext.dependency_results`); blocks."""
        inner = self._inner
        return self._call(lambda: inner.dependency_results())

    def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """Enqueue a child job (see :meth:`JobContext.schedule_job`); blocks. ``result()`` of
        the handle returned must not be called from the handler's thread."""
        inner = self._inner
        return self._call(lambda: inner.schedule_job(name, data, run_at=run_at, **options))


#: The options ``ctx.schedule_job`` takes (``connection`` is not one: the handler's
#: connection is not the store's).
_CHILD_OPTIONS = option_names(EnqueueOptions) - {"connection"}


def _check_progress(progress: object, message: object) -> int:
    if not isinstance(progress, int | float) or isinstance(progress, bool):
        raise InvalidArgumentError("progress must be a number between 0 and 100")
    if not 0 <= progress <= 100:
        raise InvalidArgumentError("progress must be between 0 and 100")
    if message is not None and (
        not isinstance(message, str) or len(message) > 1000 or "\x00" in message
    ):
        raise InvalidArgumentError(
            "progress message must be a string of at most 1000 chars without NUL"
        )
    return int(progress)


def _error_json(exc: BaseException) -> dict[str, Any]:
    return describe_error(exc).to_json()


# -- durable steps: checks, calls and retries ---------------------------------------------------
def _check_step_call(name: object, fn: object, retry: object) -> None:
    if not isinstance(name, str) or not name or len(name) > 200 or "\x00" in name:
        raise InvalidArgumentError("step name must be a non-empty string (max 200 chars)")
    if not callable(fn):
        raise InvalidArgumentError(f"run_step needs a function to run, got {fn!r:.80}")
    if retry is not None and not isinstance(retry, RetryPolicy | tenacity.BaseRetrying):
        raise InvalidArgumentError(
            "retry must be a jobrunner RetryPolicy or a tenacity Retrying / AsyncRetrying, "
            f"got {retry!r:.80}"
        )


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an object with async __call__
    )


class _Guarded(tenacity.retry_base):
    """A retry condition that never retries once the attempt is over, nor a
    ``BaseException`` that is not an ``Exception`` (cancellation, exit)."""

    def __init__(self, ctx: JobContext, inner: Callable[[tenacity.RetryCallState], bool]) -> None:
        self.ctx = ctx
        self.inner = inner

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            if not isinstance(exc, Exception) or isinstance(exc, StepFencedError):
                return False
        if self.ctx.is_cancelled():
            return False
        return bool(self.inner(retry_state))


def _policy_strategies(policy: RetryPolicy) -> dict[str, Any]:
    """tenacity strategies doing what ``policy`` does to a job's attempts."""

    def decision(state: tenacity.RetryCallState) -> float | None:
        outcome = state.outcome
        exc = None if outcome is None else outcome.exception()
        if exc is None:
            return None
        return decide_failure(exc, attempt=state.attempt_number, policy=policy).retry_in

    def retry(state: tenacity.RetryCallState) -> bool:
        return decision(state) is not None

    def wait(state: tenacity.RetryCallState) -> float:
        return decision(state) or 0.0

    return {
        "stop": tenacity.stop_after_attempt(policy.max_attempts),
        "wait": wait,
        "retry": retry,
        "reraise": True,
    }


def _strategies(retry: tenacity.BaseRetrying) -> dict[str, Any]:
    return {
        "stop": retry.stop,
        "wait": retry.wait,
        "retry": retry.retry,
        "before": retry.before,
        "after": retry.after,
        "before_sleep": retry.before_sleep,
        "reraise": retry.reraise,
        "retry_error_cls": retry.retry_error_cls,
        "retry_error_callback": retry.retry_error_callback,
    }


def _retrying(ctx: JobContext, retry: StepRetry | None, *, sync: bool) -> tenacity.BaseRetrying:
    if retry is None:
        base: dict[str, Any] = {"stop": tenacity.stop_after_attempt(1), "reraise": True}
    elif isinstance(retry, RetryPolicy):
        base = _policy_strategies(retry)
    else:
        base = _strategies(retry)
    base["retry"] = _Guarded(ctx, base.get("retry", tenacity.retry_if_exception_type()))
    if sync:
        return tenacity.Retrying(sleep=functools.partial(_sleep_unless_over, ctx), **base)
    return tenacity.AsyncRetrying(**base)


def _sleep_unless_over(ctx: JobContext, seconds: float) -> None:
    """A retry wait in a handler thread that ends early when the attempt is over."""
    deadline = time.monotonic() + seconds
    while not ctx.is_cancelled():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))
    raise StepFencedError(f"job {ctx.job_id}: the attempt is over; step retries stopped")


async def _call_async_with_retry(
    ctx: JobContext,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry: StepRetry | None,
    context: contextvars.Context | None,
) -> tuple[Any, int]:
    """Call ``fn`` on the loop (a plain function in a thread) under ``retry``; its value and
    the number of calls made."""
    loop = asyncio.get_running_loop()
    retrying = _retrying(ctx, retry, sync=False)
    assert isinstance(retrying, tenacity.AsyncRetrying)
    value: Any = None
    tries = 0
    async for call in retrying:
        with call:
            tries = call.retry_state.attempt_number
            if _is_async_callable(fn):
                value = await fn(*args, **kwargs)
            else:
                runs_in = (context or contextvars.copy_context()).copy()
                value = await loop.run_in_executor(
                    None, functools.partial(runs_in.run, fn, *args, **kwargs)
                )
            if inspect.isawaitable(value):
                value = await value
    return value, tries


def _call_sync_with_retry(
    ctx: JobContext,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry: StepRetry | None,
) -> tuple[Any, int]:
    """Call a plain ``fn`` in this (the handler's) thread under ``retry``."""
    retrying = _retrying(ctx, retry, sync=True)
    value: Any = None
    tries = 0
    for call in retrying:
        with call:
            tries = call.retry_state.attempt_number
            value = fn(*args, **kwargs)
    return value, tries
