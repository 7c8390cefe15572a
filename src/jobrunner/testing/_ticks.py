"""Tick arithmetic for the in-memory runner's recurring schedules.

Uses :mod:`jobrunner._recurrence` (the PostgreSQL backend's parser) when it offers
``parse_expression``; otherwise a small local parser with the same grammar: 5-field cron,
``@hourly``/``@daily``/``@weekly``/``@monthly``, or ``"N seconds|minutes|hours|days"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobrunner._errors import ScheduleError

_INTERVAL = re.compile(
    r"^\s*(?:every\s+)?(\d+)\s*(second|sec|s|minute|min|m|hour|h|day|d)s?\s*$", re.IGNORECASE
)
_UNITS = {
    "second": 1,
    "sec": 1,
    "s": 1,
    "minute": 60,
    "min": 60,
    "m": 60,
    "hour": 3600,
    "h": 3600,
    "day": 86400,
    "d": 86400,
}
_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}


@dataclass(frozen=True)
class Ticks:
    """When a schedule fires: ``next_after(t)`` is the first tick strictly after ``t``."""

    expression: str
    timezone: str
    interval: timedelta | None
    anchor: datetime

    def next_after(self, when: datetime) -> datetime:
        """The first tick strictly after ``when``."""
        if self.interval is not None:
            elapsed = (when - self.anchor) / self.interval
            steps = max(math.floor(elapsed) + 1, 1)
            return self.anchor + steps * self.interval
        from croniter import croniter

        local = when.astimezone(ZoneInfo(self.timezone))
        nxt: datetime = croniter(self.expression, local).get_next(datetime)
        return nxt.astimezone(when.tzinfo)

    def due_between(self, first: datetime, now: datetime, limit: int) -> list[datetime]:
        """Ticks from ``first`` up to ``now`` inclusive, the latest ``limit`` of them."""
        ticks: list[datetime] = []
        tick = first
        scanned = 0
        while tick <= now:
            ticks.append(tick)
            if len(ticks) > limit:
                ticks.pop(0)
            scanned += 1
            if scanned > 100_000:  # a fast schedule and a long jump: keep the newest only
                break
            tick = self.next_after(tick)
        return ticks


def compile_ticks(expression: str, timezone: str, anchor: datetime) -> Ticks:
    """Validate ``expression`` and ``timezone``.

    Raises:
        ScheduleError: either is not understood.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("schedule expression must be a non-empty string")
    if not isinstance(timezone, str) or not timezone:
        raise ScheduleError("timezone must be an IANA name such as 'UTC'")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {timezone!r}") from None
    _check_with_shared_parser(expression, timezone)
    text = expression.strip()
    match = _INTERVAL.match(text)
    if match:
        amount = int(match.group(1))
        if amount <= 0:
            raise ScheduleError("an interval schedule needs a positive amount")
        unit = _UNITS[match.group(2).lower()]
        return Ticks(text, timezone, timedelta(seconds=amount * unit), anchor)
    from croniter import croniter

    if text.lower() not in _ALIASES and len(text.split()) != 5:
        raise ScheduleError(
            f"invalid schedule {expression!r}: use 5-field cron, @hourly/@daily/@weekly/"
            "@monthly, or 'N seconds|minutes|hours|days'"
        )
    if not croniter.is_valid(text):
        raise ScheduleError(f"invalid cron expression {expression!r}")
    return Ticks(text, timezone, None, anchor)


def _check_with_shared_parser(expression: str, timezone: str) -> None:
    """Let the PostgreSQL backend's parser reject what it rejects, so both agree."""
    try:
        from jobrunner import _recurrence  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    parse: Any = getattr(_recurrence, "parse_expression", None) or getattr(
        _recurrence, "parse", None
    )
    if parse is None:
        return
    try:
        parse(expression, timezone)
    except TypeError:
        parse(expression)
