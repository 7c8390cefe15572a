"""The exception hierarchy: one root for everything jobrunner raises, plus handler outcomes."""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "DuplicateHandlerError",
    "HandlerNotFoundError",
    "InvalidArgumentError",
    "JobNotFoundError",
    "JobRunnerError",
    "JobTimeoutError",
    "NonRetryable",
    "Retry",
    "ScheduleError",
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
        from jobrunner._validation import MAX_INTERVAL_SECONDS, as_optional_seconds

        super().__init__(reason)
        self.delay = as_optional_seconds(
            delay, "Retry delay", allow_zero=True, maximum=MAX_INTERVAL_SECONDS
        )
        self.reason = reason


class NonRetryable(Exception):  # named for the outcome
    """Raised by a handler (directly or as ``raise NonRetryable(...) from exc``) to fail now."""
