"""One attempt of one job, from the handler call to its outcome: the only place handlers run.

Every backend (the PostgreSQL worker, the Temporal activity, the in-memory runner) hands a
claimed attempt to :func:`run_attempt` and records the :data:`Outcome` it returns. The contract:
whatever handler code does — return any value, raise any ``BaseException`` (``CancelledError``,
``SystemExit``, ``KeyboardInterrupt`` and ``GeneratorExit`` included), hang past its timeout,
swallow cancellation — ``run_attempt`` returns exactly one outcome, within a bounded time after
the timeout or an abort, and never lets handler code end the worker process.

Handler code cannot tell the worker's own cancellation apart from a ``CancelledError`` of its
own; this module can: the backend stops an attempt only through :meth:`Attempt.abort`, which
records why before cancelling, and the handler always runs in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from jobrunner._context import JobContext, SyncJobContext
from jobrunner._errors import HandlerNotFoundError, NonRetryable
from jobrunner._models import JobError
from jobrunner._outcome import decide_failure, describe_error, timeout_error
from jobrunner._policy import JobPolicy
from jobrunner.registry import HandlerSpec

__all__ = [
    "MAX_RESULT_BYTES",
    "AbortReason",
    "Aborted",
    "Attempt",
    "Completed",
    "Failed",
    "Outcome",
    "run_attempt",
]

logger = logging.getLogger("jobrunner.execution")

#: Largest handler result stored, as UTF-8 JSON (64 MiB); a larger one fails the attempt for
#: good with an error saying so. PostgreSQL's own jsonb limit is about 255 MiB.
MAX_RESULT_BYTES = 64 * 1024 * 1024

#: Seconds an ``async def`` handler gets to finish after it was cancelled (timeout, cancel
#: request, lease loss, shutdown) before its task is abandoned and the outcome recorded anyway.
CANCEL_GRACE = 5.0


class AbortReason(enum.Enum):
    """Why the backend stopped an attempt before its handler finished."""

    CANCELLED = "cancelled"
    """The job was cancelled; the cancel already recorded the job's outcome."""
    LEASE_LOST = "lease_lost"
    """The attempt's lease was lost; whoever holds the job now decides its outcome."""
    SHUTDOWN = "shutdown"
    """The worker is stopping; the attempt is handed back without counting it."""
    INTERRUPTED = "interrupted"
    """The attempt was stopped from outside (e.g. Temporal gave up on it): a failed attempt."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The handler returned; ``result_json`` is its result as storable JSON text."""

    result_json: str | None

    @property
    def result(self) -> Any:
        """The result as it reads back from storage."""
        return None if self.result_json is None else json.loads(self.result_json)


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed; ``retry_in`` seconds until the next one, or ``None``: failed for
    good."""

    error: JobError
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class Aborted:
    """The backend stopped the attempt (see :class:`AbortReason`)."""

    reason: AbortReason


Outcome = Completed | Failed | Aborted


class Attempt:
    """A claimed attempt: its context, its policy, and the switch that stops it.

    Backends key running attempts by :attr:`key` (job id and lease token), never by job id
    alone, so the clean-up of an old attempt can never touch a newer attempt of the same job.
    """

    def __init__(self, ctx: JobContext, data: dict[str, Any], policy: JobPolicy) -> None:
        self.ctx = ctx
        self.data = data
        self.policy = policy
        self.abort_reason: AbortReason | None = None
        self.started_wall = time.time()
        self.started = time.monotonic()
        #: True when the handler ignored cancellation past the grace and was left running.
        self.abandoned = False
        self._aborted = asyncio.Event()

    @property
    def key(self) -> tuple[uuid.UUID, int]:
        """``(job_id, lease_token)``: unique per attempt."""
        return (self.ctx.job_id, self.ctx.lease_token)

    @property
    def duration_ms(self) -> float:
        """Milliseconds since the attempt started."""
        return (time.monotonic() - self.started) * 1000

    def abort(self, reason: AbortReason) -> None:
        """Stop the handler; the first reason given wins."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.ctx.mark_cancelled()
        self._aborted.set()

    def fail_with(self, exc: BaseException, rand: Callable[[], float] = random.random) -> Failed:
        """The outcome of this attempt failing with ``exc``, under the job's policy."""
        decision = decide_failure(
            exc, attempt=self.ctx.attempt, policy=self.policy.retry, rand=rand
        )
        return Failed(decision.error, decision.retry_in)


class _HandlerRaised(Exception):
    """Carries a ``BaseException`` out of handler code without it ending the event loop.

    An asyncio task re-raises ``SystemExit`` and ``KeyboardInterrupt`` out of the loop, which
    would end the worker process; the handler's own wrapper catches them first.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


async def _call_async(handler: Callable[..., Any], ctx: JobContext, data: dict[str, Any]) -> Any:
    try:
        return await handler(ctx, data)
    except (KeyboardInterrupt, SystemExit, GeneratorExit) as exc:
        raise _HandlerRaised(exc) from None


def _call_sync(handler: Callable[..., Any], ctx: SyncJobContext, data: dict[str, Any]) -> Any:
    try:
        return handler(ctx, data)
    except BaseException as exc:  # noqa: BLE001 - the thread pool must never see SystemExit
        raise _HandlerRaised(exc) from None


async def run_attempt(
    attempt: Attempt,
    spec: HandlerSpec | None,
    *,
    executor: Executor | None = None,
    rand: Callable[[], float] = random.random,
    cancel_grace: float | None = None,
) -> Outcome:
    """Run ``attempt``'s handler once and return its one outcome.

    Args:
        attempt: The claimed attempt; stop it from outside with :meth:`Attempt.abort`.
        spec: The local handler for the job's name (``None``: the job fails, not retried).
        executor: Thread pool for plain ``def`` handlers (``None``: the loop's default).
        rand: Source of jitter for the retry delay.
        cancel_grace: Seconds a cancelled ``async def`` handler gets to finish (default
            :data:`CANCEL_GRACE`).

    Returns:
        :class:`Completed`, :class:`Failed` or :class:`Aborted`. Cancelling the task that
        awaits this stops the handler and re-raises ``CancelledError`` (no outcome).
    """
    ctx = attempt.ctx
    if spec is None:
        # Failed for good (docs/concepts.md): waiting would not give this worker the handler.
        return Failed(describe_error(HandlerNotFoundError(ctx.name)), None)
    timeout = attempt.policy.timeout
    loop = asyncio.get_running_loop()
    if spec.is_async:
        work: asyncio.Future[Any] = loop.create_task(
            _call_async(spec.handler, ctx, attempt.data), name=f"jobrunner-handler-{ctx.job_id}"
        )
    else:
        work = loop.run_in_executor(
            executor, _call_sync, spec.handler, SyncJobContext(ctx, loop), attempt.data
        )
    stopper = loop.create_task(attempt._aborted.wait())
    try:
        done, _ = await asyncio.wait(
            {work, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        finished_first = work in done
        if not finished_first:
            ctx.mark_cancelled()
            work.add_done_callback(_retrieve_late)
            if spec.is_async:
                grace = CANCEL_GRACE if cancel_grace is None else cancel_grace
                await _cancel_and_wait(work, grace, attempt)
    except asyncio.CancelledError:
        ctx.mark_cancelled()
        work.cancel()
        raise
    finally:
        stopper.cancel()
    # What the handler did before anyone stopped it decides; after a stop, the stop does (a
    # handler's reaction to being cancelled is not its outcome).
    if finished_first:
        outcome = _classify(attempt, work, rand)
    elif attempt.abort_reason is not None:
        outcome = Aborted(attempt.abort_reason)
    else:
        outcome = attempt.fail_with(timeout_error(timeout), rand)
    if not isinstance(outcome, Aborted):
        await _flush_progress(ctx)
    ctx.cancel_pending_flush()
    return outcome


async def _cancel_and_wait(work: asyncio.Future[Any], grace: float, attempt: Attempt) -> None:
    work.cancel()
    done, _ = await asyncio.wait({work}, timeout=grace)
    if done:
        return
    # The handler swallowed the cancellation. It cannot be killed; it is fenced out (every
    # write of an attempt presents its lease token) and the outcome is recorded without it.
    attempt.abandoned = True
    _ABANDONED.add(work)
    work.add_done_callback(_ABANDONED.discard)
    logger.error(
        "job %s attempt %d: the handler ignored cancellation for %.0f s; recording the outcome "
        "without waiting for it (it keeps running, fenced out)",
        attempt.ctx.job_id,
        attempt.ctx.attempt,
        grace,
    )


#: Handler tasks that ignored cancellation; kept referenced so they are not garbage collected
#: mid-run, and counted by :func:`abandoned_handlers`.
_ABANDONED: set[asyncio.Future[Any]] = set()


def _retrieve_late(work: asyncio.Future[Any]) -> None:
    # A stopped handler's late result or error is discarded, not logged as never retrieved.
    if not work.cancelled():
        work.exception()


def abandoned_handlers() -> int:
    """How many ``async def`` handlers still run after their attempt was recorded.

    A process that stops should not wait for them (they ignored cancellation): the worker
    entry point exits without joining them.
    """
    return sum(1 for task in _ABANDONED if not task.done())


def _classify(attempt: Attempt, work: asyncio.Future[Any], rand: Callable[[], float]) -> Outcome:
    if work.cancelled():
        # Not the backend's cancel (that sets abort_reason first): handler code raised
        # CancelledError, e.g. it awaited a future cancelled elsewhere.
        return attempt.fail_with(asyncio.CancelledError("the handler raised CancelledError"), rand)
    exc = work.exception()
    if exc is not None:
        original = exc.original if isinstance(exc, _HandlerRaised) else exc
        return attempt.fail_with(original, rand)
    try:
        return Completed(storable_result(work.result()))
    except NonRetryable as problem:
        return Failed(describe_error(problem), None)


_NUL_ESCAPE = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")


def storable_result(result: Any) -> str | None:
    """A handler's result as JSON text that PostgreSQL's jsonb accepts (``None`` stays so).

    Raises:
        NonRetryable: the result cannot be stored; running the handler again would not help.
    """
    if result is None:
        return None
    try:
        text = json.dumps(result, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise NonRetryable(f"the handler's result is not JSON-serialisable: {exc}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise NonRetryable(
            "the handler's result contains a lone surrogate (not valid UTF-8; jsonb cannot hold it)"
        ) from None
    if size > MAX_RESULT_BYTES:
        raise NonRetryable(
            f"the handler's result is {size} bytes of JSON, over the limit of "
            f"{MAX_RESULT_BYTES} bytes"
        )
    if _NUL_ESCAPE.search(text):
        raise NonRetryable("the handler's result contains a NUL character (jsonb cannot hold it)")
    return text


async def _flush_progress(ctx: JobContext) -> None:
    # Progress is best effort: an unwritable last progress value never costs the outcome.
    with contextlib.suppress(Exception):
        await ctx.flush_progress()
