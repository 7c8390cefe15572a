"""The exception hierarchy: one root for everything jobrunner raises, plus handler outcomes."""

from __future__ import annotations

import math
from datetime import timedelta

from jobrunner._limits import MAX_INTERVAL_SECONDS

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "DependencyError",
    "DuplicateHandlerError",
    "DuplicateStepError",
    "HandlerNotFoundError",
    "InvalidArgumentError",
    "JobNotFoundError",
    "JobRunnerError",
    "JobTimeoutError",
    "NonRetryable",
    "NotSupportedError",
    "Retry",
    "ScheduleError",
    "StepFencedError",
    "UnavailableError",
    "UnknownOptionError",
]


class JobRunnerError(Exception):
    """Root of every error jobrunner raises at its API boundary."""


class InvalidArgumentError(JobRunnerError, ValueError):
    """An argument was malformed; nothing was written."""


class UnknownOptionError(InvalidArgumentError, TypeError):
    """A keyword argument the method does not take; also a ``TypeError``, as Python raises
    for an unexpected keyword, so ``except TypeError`` keeps working."""


class DependencyError(InvalidArgumentError):
    """A job's dependencies (``depends_on``) were refused; nothing was written.

    Raised for an id the tenant has no job with (another tenant's job is as unknown as one
    that never existed), a recurring schedule's tracker, more than ``MAX_DEPENDENCIES``, or an
    option a job with dependencies cannot take. A cycle cannot be formed: a job can only
    depend on jobs that exist before it.
    """


class NotSupportedError(JobRunnerError):
    """The backend does not support this feature (yet); nothing was written. The message
    names the feature and where the documentation says so."""


class ConfigurationError(JobRunnerError):
    """The environment or explicit settings do not describe a usable runner."""


class HandlerNotFoundError(JobRunnerError, LookupError):
    """No handler is registered under the job name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"No handler registered for job: {name}")
        self.name = name


class JobNotFoundError(JobRunnerError, LookupError):
    """The tenant has no job with that id."""


class DuplicateHandlerError(JobRunnerError):
    """A job name was registered twice with different handlers."""


class DuplicateStepError(JobRunnerError):
    """``ctx.run_step`` was called twice with the same step name in one attempt.

    A durable step's name is its identity within the job: the stored result of the first call
    would be returned to the second, so the second call is refused instead.
    """

    def __init__(self, name: str) -> None:
        super().__init__(
            f"step {name!r} already ran in this attempt; durable step names are unique within a job"
        )
        self.name = name


class StepFencedError(JobRunnerError):
    """A durable step could not be read or recorded because its attempt is over.

    The attempt no longer holds the job (cancelled, recorded as timed out or failed, or its
    lease taken over by another worker): nothing of the step was recorded and the handler
    should stop. Raised by ``ctx.run_step``; the attempt's own outcome is decided elsewhere.
    """


class ScheduleError(InvalidArgumentError):
    """A recurring schedule expression or timezone was rejected."""


class DatabaseError(JobRunnerError):
    """The database failed; the driver's exception is chained as ``__cause__``."""


class UnavailableError(JobRunnerError):
    """A backend service (database, Temporal) could not be reached."""


class JobTimeoutError(JobRunnerError, TimeoutError):
    """A timeout passed (also a built-in ``TimeoutError``).

    Recorded for an attempt whose handler ran past its timeout (the attempt failed and follows
    the retry policy); raised by waits that give up, such as ``drain`` / ``adrain`` and the
    sync runner's ``wait_for_job``.
    """


class Retry(Exception):  # named for what the handler asks for, not an error
    """Raised by a handler to run the job again after ``delay``.

    The attempt counts toward ``RetryPolicy.max_attempts``; when none are left the job fails.

    Args:
        delay: Seconds (or a ``timedelta``) to wait before the next attempt, from 0 to
            ``MAX_INTERVAL_SECONDS`` (ten years), so the next run time is always a valid
            timestamp. ``None`` uses the retry policy's backoff.
        reason: Recorded as the attempt's error message.

    Raises:
        InvalidArgumentError: ``delay`` is not such a duration (negative, NaN, infinite, over
            ten years, not a number); the attempt then fails with this error instead and the
            policy's backoff applies.
    """

    def __init__(self, delay: float | timedelta | None = None, reason: str = "retry requested"):
        super().__init__(reason)
        self.delay = _retry_delay(delay)
        self.reason = reason


def _retry_delay(delay: object) -> float | None:
    # The same rule as every interval at the boundary (_validation.as_seconds), kept here so
    # the error hierarchy imports no checks.
    if delay is None:
        return None
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        try:
            seconds = float(delay)
        except OverflowError:
            seconds = math.inf
    else:
        raise InvalidArgumentError(f"Retry delay must be seconds or a timedelta, got {delay!r:.80}")
    if not math.isfinite(seconds):
        raise InvalidArgumentError("Retry delay must be finite")
    if not 0 <= seconds <= MAX_INTERVAL_SECONDS:
        raise InvalidArgumentError(
            f"Retry delay must be from 0 to {MAX_INTERVAL_SECONDS:.0f} seconds"
        )
    return seconds


class NonRetryable(Exception):  # named for the outcome
    """Raised by a handler (directly or as ``raise NonRetryable(...) from exc``) to fail now."""
