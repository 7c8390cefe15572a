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
import contextvars
import enum
import functools
import json
import logging
import random
import sys
import threading
import time
import traceback
import types
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobrunner import _telemetry as telemetry
from jobrunner._context import JobContext, SyncJobContext
from jobrunner._errors import HandlerNotFoundError, NonRetryable
from jobrunner._limits import MAX_RESULT_BYTES as _MAX_RESULT_BYTES
from jobrunner._models import JobError
from jobrunner._outcome import decide_failure, describe_error, storable_json, timeout_error
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
#: good with an error saying so. PostgreSQL's own jsonb limit is about 255 MiB. A durable
#: step's result has the same limit (``jobrunner._limits.MAX_RESULT_BYTES``).
MAX_RESULT_BYTES = _MAX_RESULT_BYTES

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
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """The exception itself, for logs (``error`` is what is stored)."""


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
        #: True when the attempt ran past its timeout.
        self.timed_out = False
        #: When the job was due (epoch seconds), if the backend knows: the queue wait metric.
        self.due_at: float | None = None
        #: Wakes the running attempt's wait (set by :func:`run_attempt` while it waits).
        self._wake: Callable[[], None] | None = None

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
        if self._wake is not None:
            self._wake()

    def fail_with(self, exc: BaseException, rand: Callable[[], float] = random.random) -> Failed:
        """The outcome of this attempt failing with ``exc``, under the job's policy."""
        decision = decide_failure(
            exc, attempt=self.ctx.attempt, policy=self.policy.retry, rand=rand
        )
        return Failed(decision.error, decision.retry_in, exc)


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


class _HandlerThread:
    """Which thread runs a plain ``def`` handler (its stack is shown when it times out)."""

    __slots__ = ("ident",)

    def __init__(self) -> None:
        self.ident: int | None = None


def _call_sync(
    handler: Callable[..., Any],
    ctx: SyncJobContext,
    data: dict[str, Any],
    thread: _HandlerThread,
) -> Any:
    thread.ident = threading.get_ident()
    try:
        return handler(ctx, data)
    except BaseException as exc:  # noqa: BLE001 - the thread pool must never see SystemExit
        raise _HandlerRaised(exc) from None
    finally:
        thread.ident = None


async def run_attempt(
    attempt: Attempt,
    spec: HandlerSpec | None,
    *,
    executor: Executor | None = None,
    rand: Callable[[], float] = random.random,
    cancel_grace: float | None = None,
    runner_type: str = "",
) -> Outcome:
    """Run ``attempt``'s handler once and return its one outcome.

    The attempt is observed here, once for every backend: a span ``jobrunner.run <name>``
    continuing the enqueuer's trace (docs/howto/observability.md), a log record for its start
    (debug) and for every ending but success, and the attempt counters and histograms.

    Args:
        attempt: The claimed attempt; stop it from outside with :meth:`Attempt.abort`.
        spec: The local handler for the job's name (``None``: the job fails, not retried).
        executor: Thread pool for plain ``def`` handlers (``None``: the loop's default).
        rand: Source of jitter for the retry delay.
        cancel_grace: Seconds a cancelled ``async def`` handler gets to finish (default
            :data:`CANCEL_GRACE`).
        runner_type: The backend's name, for logs and metrics.

    Returns:
        :class:`Completed`, :class:`Failed` or :class:`Aborted`. Cancelling the task that
        awaits this stops the handler and re-raises ``CancelledError`` (no outcome).
    """
    ctx = attempt.ctx
    carrier = ctx.metadata.pop(telemetry.TRACE_CONTEXT_KEY, None)
    span = telemetry.attempt_span(
        name=ctx.name,
        job_id=ctx.job_id,
        tenant=ctx.tenant,
        attempt=ctx.attempt,
        queue=ctx.queue,
        runner_type=runner_type,
        carrier=carrier,
    )
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "job %s (%s) attempt %d/%d started",
            ctx.job_id,
            ctx.name,
            ctx.attempt,
            ctx.max_attempts,
            extra=_log_fields(attempt, runner_type),
        )
    try:
        with span.current():
            outcome = await _run(attempt, spec, executor, rand, cancel_grace)
    except BaseException:
        span.end("interrupted", None, {})
        raise
    _report(attempt, outcome, span, runner_type)
    return outcome


async def _run(
    attempt: Attempt,
    spec: HandlerSpec | None,
    executor: Executor | None,
    rand: Callable[[], float],
    cancel_grace: float | None,
) -> Outcome:
    ctx = attempt.ctx
    if spec is None:
        # Failed for good (docs/concepts.md): waiting would not give this worker the handler.
        missing = HandlerNotFoundError(ctx.name)
        return Failed(describe_error(missing), None, missing)
    timeout = attempt.policy.timeout
    loop = asyncio.get_running_loop()
    thread = _HandlerThread()
    if spec.is_async:
        work: asyncio.Future[Any] = loop.create_task(
            _call_async(spec.handler, ctx, attempt.data), name=f"jobrunner-handler-{ctx.job_id}"
        )
    else:
        # The handler's thread runs in a copy of this context: the attempt's span is current
        # there too (run_in_executor alone does not carry context variables).
        call = functools.partial(
            contextvars.copy_context().run,
            _call_sync,
            spec.handler,
            SyncJobContext(ctx, loop),
            attempt.data,
            thread,
        )
        work = loop.run_in_executor(executor, call)
    # One future woken by whichever comes first: the handler finishing, an abort, the
    # timeout (no task per attempt for the abort, no asyncio.wait bookkeeping).
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    work.add_done_callback(wake)
    attempt._wake = wake
    if attempt.abort_reason is not None:
        wake()
    timer = loop.call_later(timeout, wake) if timeout is not None else None
    where: str | None = None
    try:
        await waiter
        finished_first = work.done()
        if not finished_first:
            if attempt.abort_reason is None:
                # The timeout: where the handler is now is what its error must show.
                attempt.timed_out = True
                where = _handler_stack(work, thread) if spec.is_async else _thread_stack(thread)
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
        attempt._wake = None
        if timer is not None:
            timer.cancel()
        work.remove_done_callback(wake)
    # What the handler did before anyone stopped it decides; after a stop, the stop does (a
    # handler's reaction to being cancelled is not its outcome).
    if finished_first:
        outcome = _classify(attempt, work, rand)
    elif attempt.abort_reason is not None:
        outcome = Aborted(attempt.abort_reason)
    else:
        expired = timeout_error(timeout)
        if where:
            expired.add_note(where)
        outcome = attempt.fail_with(expired, rand)
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
        return Failed(describe_error(problem), None, problem)


def storable_result(result: Any) -> str | None:
    """A handler's result as JSON text that PostgreSQL's jsonb accepts (``None`` stays so).

    Raises:
        NonRetryable: the result cannot be stored; running the handler again would not help.
    """
    return storable_json(result, what="the handler's result", limit=MAX_RESULT_BYTES)


async def _flush_progress(ctx: JobContext) -> None:
    # Progress is best effort: an unwritable last progress value never costs the outcome.
    with contextlib.suppress(Exception):
        await ctx.flush_progress()


# -- where a timed-out handler was -------------------------------------------------------------
_STACK_LIMIT = 100


def _handler_stack(work: asyncio.Future[Any], thread: _HandlerThread) -> str:
    """The stack of an ``async def`` handler's task, from the handler down to the await it is
    suspended in (``Task.get_stack`` stops at the outermost coroutine; this follows
    ``cr_await`` through every coroutine awaited)."""
    if not isinstance(work, asyncio.Task):
        return _thread_stack(thread)
    frames: list[tuple[types.FrameType, int]] = []
    awaited: Any = work.get_coro()
    while awaited is not None and len(frames) < _STACK_LIMIT:
        frame = (
            getattr(awaited, "cr_frame", None)
            or getattr(awaited, "gi_frame", None)
            or getattr(awaited, "ag_frame", None)
        )
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
            or getattr(awaited, "ag_await", None)
        )
    # The first frame is jobrunner's own wrapper around the handler.
    return _format_stack(traceback.StackSummary.extract(frames[1:] or frames))


def _thread_stack(thread: _HandlerThread) -> str:
    """The stack of the thread running a plain ``def`` handler, down to the line it runs."""
    ident = thread.ident
    frame = None if ident is None else sys._current_frames().get(ident)
    if frame is None:
        return "The handler had not started when it timed out (every handler thread was busy)."
    summary = traceback.StackSummary.extract(traceback.walk_stack(frame), limit=_STACK_LIMIT)
    summary.reverse()
    # Drop the thread pool's and jobrunner's frames above the handler.
    for index, entry in enumerate(summary):
        if entry.name == "_call_sync" and entry.filename == __file__:
            summary = traceback.StackSummary.from_list(summary[index + 1 :])
            break
    return _format_stack(summary)


def _format_stack(summary: traceback.StackSummary) -> str:
    if not summary:
        return "The handler's stack at the timeout could not be read."
    return "The handler was here when it timed out (most recent call last):\n" + "".join(
        summary.format()
    ).rstrip("\n")


# -- logs, spans and metrics of an attempt -----------------------------------------------------
def _log_fields(attempt: Attempt, runner_type: str) -> dict[str, Any]:
    ctx = attempt.ctx
    return {
        "job_id": str(ctx.job_id),
        "job_name": ctx.name,
        "tenant": str(ctx.tenant),
        "attempt": ctx.attempt,
        "max_attempts": ctx.max_attempts,
        "queue": ctx.queue,
        "runner_type": runner_type,
    }


_ABORT_LOGS: dict[AbortReason, tuple[int, str]] = {
    AbortReason.CANCELLED: (logging.INFO, "cancelled; its handler was stopped"),
    AbortReason.LEASE_LOST: (
        logging.WARNING,
        "lost its lease; its handler was stopped (the job's new holder decides its outcome)",
    ),
    AbortReason.SHUTDOWN: (
        logging.INFO,
        "was handed back unfinished (the worker is stopping; the attempt does not count)",
    ),
    AbortReason.INTERRUPTED: (logging.WARNING, "was interrupted before its handler finished"),
}


def _report(
    attempt: Attempt, outcome: Outcome, span: telemetry.AttemptSpan, runner_type: str
) -> None:
    ctx = attempt.ctx
    duration_ms = attempt.duration_ms
    span_attributes: dict[str, Any] = {}
    error: JobError | None = None
    kind: str | None
    if isinstance(outcome, Completed):
        kind = label = "completed"
        if logger.isEnabledFor(logging.DEBUG):  # the hot path: no record to build otherwise
            fields = _log_fields(attempt, runner_type)
            fields["duration_ms"] = round(duration_ms, 3)
            logger.debug(
                "job %s (%s) attempt %d completed in %.0f ms",
                ctx.job_id,
                ctx.name,
                ctx.attempt,
                duration_ms,
                extra=fields,
            )
        span.end(label, None, span_attributes)
        telemetry.record_attempt(
            kind,
            name=ctx.name,
            queue=ctx.queue,
            runner_type=runner_type,
            tenant=ctx.tenant,
            duration=duration_ms / 1000,
            queue_wait=_queue_wait(attempt),
        )
        return
    fields = _log_fields(attempt, runner_type)
    fields["duration_ms"] = round(duration_ms, 3)
    if isinstance(outcome, Failed):
        error = outcome.error
        kind = label = "failed" if outcome.retry_in is None else "retried"
        what = (
            f"timed out after {attempt.policy.timeout:g} s"
            if attempt.timed_out
            else f"failed: {error.type}: {error.message}"
        )
        fields.update(
            outcome="failed" if outcome.retry_in is None else "retrying",
            timed_out=attempt.timed_out,
            error_type=error.type,
        )
        exc = outcome.exception
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        if outcome.retry_in is None:
            logger.error(
                "job %s (%s) attempt %d/%d %s; the job failed for good",
                ctx.job_id,
                ctx.name,
                ctx.attempt,
                ctx.max_attempts,
                what,
                extra=fields,
                exc_info=exc_info,
            )
        else:
            next_run = _next_run(outcome.retry_in)
            fields.update(retry_in=outcome.retry_in, next_run_at=next_run)
            span_attributes["jobrunner.retry_in"] = outcome.retry_in
            logger.warning(
                "job %s (%s) attempt %d/%d %s; retrying in %.3g s (at %s)",
                ctx.job_id,
                ctx.name,
                ctx.attempt,
                ctx.max_attempts,
                what,
                outcome.retry_in,
                next_run,
                extra=fields,
                exc_info=exc_info,
            )
        if attempt.timed_out:
            label = "timeout"
            span_attributes["jobrunner.timed_out"] = True
    else:
        reason = outcome.reason
        kind = "cancelled" if reason is AbortReason.CANCELLED else None
        label = reason.value
        level, text = _ABORT_LOGS[reason]
        fields["outcome"] = reason.value
        logger.log(
            level,
            "job %s (%s) attempt %d %s",
            ctx.job_id,
            ctx.name,
            ctx.attempt,
            text,
            extra=fields,
        )
    span.end(label, error, span_attributes)
    telemetry.record_attempt(
        kind,
        name=ctx.name,
        queue=ctx.queue,
        runner_type=runner_type,
        tenant=ctx.tenant,
        duration=duration_ms / 1000,
        queue_wait=_queue_wait(attempt),
    )


def _queue_wait(attempt: Attempt) -> float | None:
    if attempt.due_at is None:
        return None
    return max(attempt.started_wall - attempt.due_at, 0.0)


def _next_run(retry_in: float) -> str:
    try:
        when = datetime.now(UTC) + timedelta(seconds=retry_in)
    except OverflowError:
        return "never (beyond the calendar)"
    return when.isoformat(timespec="milliseconds")
