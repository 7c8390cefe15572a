"""Turning a handler's exception into a decision: retry when, or fail now. Shared by backends."""

from __future__ import annotations

import asyncio
import json
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobrunner._errors import JobTimeoutError, NonRetryable, Retry
from jobrunner._limits import MAX_INTERVAL_SECONDS
from jobrunner._models import JobError
from jobrunner._policy import RetryPolicy

MAX_TRACEBACK_CHARS = 20_000
#: Longest delay a ``Retry`` may ask for: the documented interval bound. ``Retry`` refuses a
#: longer one when it is raised; one set on the object afterwards is clamped to it here.
MAX_RETRY_DELAY = MAX_INTERVAL_SECONDS


def describe_error(exc: BaseException) -> JobError:
    """A JSON-friendly description of ``exc`` with its traceback."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    message = str(exc) or (exc.reason if isinstance(exc, Retry) else "")
    if isinstance(exc, asyncio.CancelledError) and not message:
        message = "cancelled"
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > MAX_TRACEBACK_CHARS:
        tb = tb[: MAX_TRACEBACK_CHARS // 2] + "\n...\n" + tb[-MAX_TRACEBACK_CHARS // 2 :]
    # PostgreSQL's jsonb and text cannot hold NUL or lone surrogates: one in an exception
    # message would make the outcome unwritable.
    return JobError(type=_storable(name), message=_storable(message), traceback=_storable(tb))


def _storable(text: str) -> str:
    # NUL and lone surrogates (e.g. from undecodable bytes) are escaped as text.
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class FailureDecision:
    """What happens after a failed attempt."""

    retry_in: float | None
    """Seconds until the next attempt, or ``None`` when the job fails for good."""
    error: JobError


def decide_failure(
    exc: BaseException,
    *,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float] | None = None,
) -> FailureDecision:
    """Apply ``Retry``, ``NonRetryable``, the policy's non-retryable list and backoff."""
    error = describe_error(exc)
    if isinstance(exc, NonRetryable) or policy.is_non_retryable(exc):
        return FailureDecision(None, error)
    if not policy.attempts_left(attempt):
        return FailureDecision(None, error)
    if isinstance(exc, Retry) and _usable_delay(exc.delay):
        return FailureDecision(min(float(exc.delay), MAX_RETRY_DELAY), error)  # type: ignore[arg-type]
    delay = policy.delay_after(attempt) if rand is None else policy.delay_after(attempt, rand)
    return FailureDecision(delay, error)


def _usable_delay(delay: object) -> bool:
    # NaN or infinity (Retry accepts any float) would make an invalid next run time: such a
    # Retry falls back to the policy's backoff.
    return isinstance(delay, int | float) and not isinstance(delay, bool) and math.isfinite(delay)


_NUL_ESCAPE = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")


def storable_json(value: Any, *, what: str, limit: int) -> str | None:
    """``value`` as JSON text that PostgreSQL's jsonb accepts (``None`` stays so).

    Args:
        value: A handler's or a durable step's result.
        what: How the error names it ("the handler's result").
        limit: Largest size allowed, in bytes of UTF-8 JSON.

    Raises:
        NonRetryable: the value cannot be stored; producing it again would not help.
    """
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise NonRetryable(f"{what} is not JSON-serialisable: {exc}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise NonRetryable(
            f"{what} contains a lone surrogate (not valid UTF-8; jsonb cannot hold it)"
        ) from None
    if size > limit:
        raise NonRetryable(f"{what} is {size} bytes of JSON, over the limit of {limit} bytes")
    if _NUL_ESCAPE.search(text):
        raise NonRetryable(f"{what} contains a NUL character (jsonb cannot hold it)")
    return text


def timeout_error(timeout: float) -> JobTimeoutError:
    """The error recorded for an attempt that ran past its timeout."""
    return JobTimeoutError(f"handler exceeded its timeout of {timeout:g} s")
