"""What a handler receives as ``ctx``: identity, progress, steps and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from jobrunner._errors import InvalidArgumentError
from jobrunner._outcome import describe_error
from jobrunner._telemetry import step_span

__all__ = ["JobContext", "JobSink", "StepHandle", "SyncJobContext"]

T = TypeVar("T")

#: Minimum seconds between two persisted progress updates of one job.
PROGRESS_INTERVAL = 0.5


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
