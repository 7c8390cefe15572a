"""Retry policy: how many attempts a job gets and how long it waits between them."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from jobrunner._errors import InvalidArgumentError
from jobrunner._limits import MAX_ATTEMPTS, MAX_INTERVAL_SECONDS, MAX_KEY_LENGTH
from jobrunner._validation import as_count, as_seconds, as_text

__all__ = ["DEFAULT_TIMEOUT", "JobPolicy", "RetryPolicy"]

#: Default handler timeout in seconds (five minutes, as in the seed).
DEFAULT_TIMEOUT = 300.0


_INF = float("inf")

logger = logging.getLogger("jobrunner.policy")


def _is_number(value: object) -> bool:
    # NaN fails every comparison, so the range checks that follow reject it too.
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for a job's attempts.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is
    ``min(initial_interval * backoff_coefficient ** (n - 1), max_interval)``, then scaled by a
    random factor in ``[1 - jitter, 1 + jitter]`` and capped at ``max_interval`` again.
    """

    max_attempts: int = 3
    """Total attempts including the first; ``1`` disables retries."""

    initial_interval: float | timedelta = 1.0
    """Delay before the second attempt, in seconds or as a timedelta."""

    backoff_coefficient: float = 2.0
    """Multiplier applied to the delay after each failed attempt (``>= 1``)."""

    max_interval: float | timedelta | None = None
    """Upper bound on any single delay, in seconds or as a timedelta.

    When not given it follows ``initial_interval``: thirty times it, at least 30 s (so the
    defaults give 30 s, and ``RetryPolicy(initial_interval=60)`` gives 30 minutes), capped at
    ten years. The derived value is stored, so equal policies compare and print equal.
    """

    jitter: float = 0.1
    """Relative random spread applied to each delay, between 0 and 1."""

    non_retryable_errors: Sequence[type[BaseException] | str] = field(default_factory=tuple)
    """Exception types (or their qualified names) that fail the job without retrying."""

    def __post_init__(self) -> None:
        as_count(self.max_attempts, "max_attempts", maximum=MAX_ATTEMPTS)
        initial = as_seconds(
            self.initial_interval, "initial_interval", maximum=MAX_INTERVAL_SECONDS
        )
        object.__setattr__(self, "initial_interval", initial)
        if self.max_interval is None:
            # Derived from the interval the user set (as Temporal derives 100x): the same
            # ratio as the defaults (1 s -> 30 s), never below 30 s, never past the bound.
            derived = min(max(30.0, 30.0 * initial), MAX_INTERVAL_SECONDS)
            object.__setattr__(self, "max_interval", derived)
        else:
            object.__setattr__(
                self,
                "max_interval",
                as_seconds(self.max_interval, "max_interval", maximum=MAX_INTERVAL_SECONDS),
            )
        if not _is_number(self.backoff_coefficient) or not 1 <= self.backoff_coefficient < _INF:
            raise InvalidArgumentError("backoff_coefficient must be a finite number >= 1")
        if self.max_interval < initial:  # type: ignore[operator]
            raise InvalidArgumentError("max_interval must be >= initial_interval")
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            raise InvalidArgumentError("jitter must be a number between 0 and 1")
        if isinstance(self.non_retryable_errors, str | type) or not isinstance(
            self.non_retryable_errors, Sequence | set | frozenset
        ):
            raise InvalidArgumentError(
                "non_retryable_errors must be a list of exception types or names"
            )
        for entry in self.non_retryable_errors:
            if isinstance(entry, str):
                as_text(
                    entry,
                    "a non_retryable_errors name",
                    max_length=MAX_KEY_LENGTH,
                    allow_empty=False,
                )
            elif not (isinstance(entry, type) and issubclass(entry, BaseException)):
                raise InvalidArgumentError("non_retryable_errors holds exception types or names")
        object.__setattr__(self, "non_retryable_errors", tuple(self.non_retryable_errors))

    @property
    def initial_seconds(self) -> float:
        """``initial_interval`` in seconds."""
        return float(self.initial_interval)  # type: ignore[arg-type]

    @property
    def max_seconds(self) -> float:
        """``max_interval`` in seconds."""
        return float(self.max_interval)  # type: ignore[arg-type]

    def delay_after(self, failed_attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed.

        Args:
            failed_attempt: The attempt that just failed, 1 for the first run.
            rand: Source of uniform ``[0, 1)`` numbers; inject one for deterministic tests.
        """
        exponent = max(failed_attempt - 1, 0)
        try:
            base = self.initial_seconds * self.backoff_coefficient**exponent
        except OverflowError:
            base = self.max_seconds
        base = min(base, self.max_seconds)
        spread = 1 + self.jitter * (2 * rand() - 1)
        return min(base * spread, self.max_seconds)

    def is_non_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` matches one of ``non_retryable_errors`` (by type or name)."""
        names = {f"{t.__module__}.{t.__qualname__}" for t in type(error).__mro__} | {
            t.__qualname__ for t in type(error).__mro__
        }
        for entry in self.non_retryable_errors:
            if isinstance(entry, str):
                if entry in names:
                    return True
            elif isinstance(error, entry):
                return True
        return False

    def attempts_left(self, attempt: int) -> bool:
        """Whether another attempt may follow attempt number ``attempt``."""
        return attempt < self.max_attempts


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """The execution policy stored with a job when it is enqueued: its only source of truth.

    A worker runs and decides retries with the job's own policy, whatever version of the
    handler registry the worker has.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Attempts, backoff and non-retryable errors."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds an attempt may run."""

    def to_json(self) -> dict[str, Any]:
        """A JSON form, stored in ``jobs.policy`` (exception types by qualified name)."""
        retry = self.retry
        return {
            "max_attempts": retry.max_attempts,
            "initial_interval": retry.initial_seconds,
            "backoff_coefficient": float(retry.backoff_coefficient),
            "max_interval": retry.max_seconds,
            "jitter": float(retry.jitter),
            "non_retryable_errors": [_error_name(e) for e in retry.non_retryable_errors],
            "timeout": float(self.timeout),
        }

    @classmethod
    def from_json(cls, data: object, *, fallback: JobPolicy | None = None) -> JobPolicy:
        """Rebuild a stored policy; a missing or unreadable one yields ``fallback``.

        Never raises: a row written by hand (or by an older release) must still run.
        """
        default = fallback if fallback is not None else cls()
        if not isinstance(data, Mapping):
            return default
        # Jobs share a handful of policies: a claim of 500 jobs rebuilds (and validates) the
        # same few. Equal stored values parse to equal policies, so they key the memo; a value
        # that cannot be hashed (a hand-written row) is parsed every time.
        try:
            key = (
                *(data.get(f) for f in _POLICY_FIELDS),
                tuple(data.get("non_retryable_errors", ())),
                default.timeout,
            )
            found = _PARSED.get(key)
        except TypeError:
            return cls._parse(data, default)
        if found is None:
            found = cls._parse(data, default)
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[key] = found
        return found

    @classmethod
    def _parse(cls, data: Mapping[str, Any], default: JobPolicy) -> JobPolicy:
        try:
            retry = RetryPolicy(
                max_attempts=int(data["max_attempts"]),
                initial_interval=float(data["initial_interval"]),
                backoff_coefficient=float(data["backoff_coefficient"]),
                max_interval=float(data["max_interval"]),
                jitter=float(data["jitter"]),
                non_retryable_errors=tuple(str(n) for n in data.get("non_retryable_errors", ())),
            )
            timeout = float(data.get("timeout", default.timeout))
            if not math.isfinite(timeout) or timeout <= 0:
                timeout = default.timeout
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("ignoring an unreadable stored job policy (%s): %r", exc, data)
            return default
        return cls(retry=retry, timeout=timeout)


_POLICY_FIELDS = (
    "max_attempts",
    "initial_interval",
    "backoff_coefficient",
    "max_interval",
    "jitter",
    "timeout",
)
#: Parsed stored policies by their stored values (see :meth:`JobPolicy.from_json`).
_PARSED: dict[tuple[Any, ...], JobPolicy] = {}
_PARSED_MAX = 512


def _error_name(entry: type[BaseException] | str) -> str:
    if isinstance(entry, str):
        return entry
    if entry.__module__ == "builtins":
        return entry.__qualname__
    return f"{entry.__module__}.{entry.__qualname__}"
