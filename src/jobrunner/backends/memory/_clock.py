"""Clocks for the in-memory backend: the real one, and one tests move by hand."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from jobrunner._errors import InvalidArgumentError
from jobrunner._validation import as_aware_datetime

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the in-memory runner asks for the time."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...  # pragma: no cover - protocol


class SystemClock:
    """The wall clock: jobs due later run when that time really comes."""

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that stands still until a test moves it.

    Retries, ``schedule_job_at`` and recurring schedules of an :class:`InMemoryJobRunner` use it,
    so a test can jump over a backoff or an hour of cron ticks instantly.

    Args:
        start: The initial time (timezone-aware); default: the real time now, to the second.

    Example:
        >>> clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))
        >>> clock.advance(minutes=5)
        datetime.datetime(2024, 1, 1, 0, 5, tzinfo=datetime.timezone.utc)
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime.now(UTC).replace(microsecond=0)
        self._now = as_aware_datetime(start, "start").astimezone(UTC)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(
        self,
        delta: timedelta | float | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> datetime:
        """Move the clock forward and return the new time.

        Args:
            delta: A timedelta or seconds.
            seconds: Added to ``delta``.
            minutes: Added to ``delta``.
            hours: Added to ``delta``.
            days: Added to ``delta``.

        Raises:
            InvalidArgumentError: the total is negative (time never goes back).
        """
        if isinstance(delta, timedelta):
            step = delta
        elif delta is None:
            step = timedelta()
        elif isinstance(delta, int | float) and not isinstance(delta, bool):
            step = timedelta(seconds=delta)
        else:
            raise InvalidArgumentError("delta must be a timedelta or seconds")
        step += timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
        if step < timedelta():
            raise InvalidArgumentError("a FakeClock only moves forward")
        return self.set(self._now + step)

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (not before the current time) and return it."""
        target = as_aware_datetime(when, "when").astimezone(UTC)
        with self._lock:
            if target < self._now:
                raise InvalidArgumentError(
                    f"a FakeClock only moves forward ({target.isoformat()} is before "
                    f"{self._now.isoformat()})"
                )
            self._now = target
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return target

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every move; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
