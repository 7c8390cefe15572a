"""Recurrence expressions: parsing, validation, next-fire and missed-tick computation.

Pure (no I/O, no clock): every function takes the instants it reasons about, so callers inject
time. Shared by the PostgreSQL scheduler, the in-memory runner and the Temporal backend.

Accepted expressions (see docs/howto/recurring.md):

* an **interval** ``"N seconds|minutes|hours|days"`` (singular forms too, case-insensitive,
  ``N >= 1``). ``"24 hours"`` is an interval, never cron. Intervals are elapsed time: ticks
  lie on a grid ``anchor + k * interval`` and ignore the timezone and daylight saving.
* a **cron** expression of exactly 5 fields ``minute hour day-of-month month day-of-week``
  (croniter syntax: ``*``, lists, ranges, steps, names, ``L``, ``#``), or one of the macros
  ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly``
  (``@annually``). Cron fields are matched against the wall clock of the schedule's timezone.

Daylight saving rules for cron (the wall clock is what the expression describes):

* **Gap** (clocks jump forward, e.g. Europe/Berlin 02:00 -> 03:00 on the last Sunday of
  March): a wall time inside the gap does not exist; it fires once, shifted forward by the
  length of the gap (``0 2 * * *`` fires at 03:00 that day, ``30 2 * * *`` at 03:30). If that
  instant coincides with another tick, it fires once.
* **Overlap** (clocks fall back, e.g. 03:00 -> 02:00 on the last Sunday of October): a wall
  time that happens twice fires once, at its first occurrence (summer time).

Usage::

    rec = parse_recurrence("0 2 * * *", "Europe/Berlin")
    first = rec.next_after(now)                 # aware datetime in UTC
    plan = plan_ticks(rec, next_run_at=first, now=later, policy=MissedTickPolicy.LATEST)
    plan.fire_times, plan.next_run_at
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from jobrunner._errors import ScheduleError
from jobrunner._models import MissedTickPolicy, OverlapPolicy

__all__ = [
    "DEFAULT_MISFIRE_GRACE",
    "MAX_CATCH_UP_LIMIT",
    "MAX_INTERVAL",
    "Recurrence",
    "TickPlan",
    "as_max_catch_up",
    "as_missed_tick_policy",
    "as_overlap_policy",
    "parse_expression",
    "parse_recurrence",
    "plan_ticks",
    "validate_timezone",
]

#: A tick older than this when the scheduler gets to it counts as missed (``skip`` drops it).
DEFAULT_MISFIRE_GRACE = timedelta(seconds=60)
#: Upper bound of ``max_catch_up``.
MAX_CATCH_UP_LIMIT = 1000
#: Longest accepted interval.
MAX_INTERVAL = timedelta(days=3660)

_INTERVAL = re.compile(r"^(\d{1,9})\s*(second|minute|hour|day)s?$", re.IGNORECASE)
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MAX_EXPRESSION = 200
# DST shifts are at most 2 hours anywhere tzdata knows of; look a bit beyond.
_DST_SLACK = timedelta(hours=3)
# Bound on croniter steps for one answer (a minutely cron across a 3 h window is 180).
_MAX_STEPS = 10_000

Kind = Literal["cron", "interval"]


def validate_timezone(name: object) -> ZoneInfo:
    """Return the IANA zone ``name`` (e.g. ``"Europe/Berlin"``, ``"UTC"``).

    Raises:
        ScheduleError: not a string or not a zone known to tzdata.
    """
    if not isinstance(name, str) or not name or len(name) > 100:
        raise ScheduleError(
            f"timezone must be an IANA zone name such as 'Europe/Berlin', got {name!r:.80}"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"unknown timezone {name!r:.80} (use an IANA name such as 'Europe/Berlin' or 'UTC')"
        ) from None


def parse_expression(expression: object) -> tuple[Kind, str, timedelta | None]:
    """Classify and normalise an expression without a timezone.

    Returns:
        ``(kind, normalised, interval)``: ``("interval", "5 minutes", timedelta(minutes=5))``
        or ``("cron", "0 0 * * *", None)``. Macros are returned as written (``"@daily"``).

    Raises:
        ScheduleError: neither a valid interval nor a valid 5-field cron expression.
    """
    if not isinstance(expression, str):
        raise ScheduleError(f"expression must be a string, got {type(expression).__name__}")
    text = " ".join(expression.split())
    if not text or len(text) > _MAX_EXPRESSION:
        raise ScheduleError("expression must be a non-empty cron expression or interval")
    match = _INTERVAL.match(text)
    if match:
        count = int(match[1])
        unit = match[2].lower()
        if count < 1:
            raise ScheduleError(f"interval must be at least 1 {unit}: {expression!r}")
        interval = timedelta(seconds=count * _UNITS[unit])
        if interval > MAX_INTERVAL:
            raise ScheduleError(f"interval {expression!r} is longer than {MAX_INTERVAL.days} days")
        return "interval", f"{count} {unit}{'' if count == 1 else 's'}", interval
    lowered = text.lower()
    if lowered.startswith("@"):
        if lowered not in _MACROS:
            raise ScheduleError(
                f"unknown cron macro {expression!r}; use one of {', '.join(sorted(_MACROS))}"
            )
        return "cron", lowered, None
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"invalid schedule expression {expression!r}: expected a 5-field cron expression "
            "('minute hour day-of-month month day-of-week', e.g. '0 0 * * *') or an interval "
            "such as '5 minutes', '24 hours', '1 day'"
        )
    try:
        valid = croniter.is_valid(text)
    except Exception:  # noqa: BLE001 - croniter raises assorted types on garbage
        valid = False
    if not valid:
        raise ScheduleError(f"invalid cron expression {expression!r}")
    return "cron", text, None


def parse_recurrence(expression: object, timezone: object = "UTC") -> Recurrence:
    """Parse and validate ``expression`` in ``timezone``; the one entry point for callers.

    A cron expression that can never fire (``0 0 31 2 *``) is rejected too.

    Raises:
        ScheduleError: bad expression or bad timezone.
    """
    zone = validate_timezone(timezone)
    kind, text, interval = parse_expression(expression)
    rec = Recurrence(
        kind=kind, expression=text, timezone=str(timezone), interval=interval, _zone=zone
    )
    if kind == "cron":
        try:
            rec.next_after(datetime(2000, 1, 1, tzinfo=UTC))
        except ScheduleError:
            raise
        except Exception:  # noqa: BLE001 - croniter gives up on impossible dates
            raise ScheduleError(f"cron expression {expression!r} never fires") from None
    return rec


@dataclass(frozen=True)
class Recurrence:
    """A validated expression in a timezone. Build with :func:`parse_recurrence`.

    All datetimes taken must be timezone-aware; all returned are aware and in UTC.
    """

    kind: Kind
    """``"cron"`` or ``"interval"``."""
    expression: str
    """Normalised expression (``"5 minutes"``, ``"0 0 * * *"``, ``"@daily"``)."""
    timezone: str
    """IANA zone name the cron fields are matched in (ignored by intervals)."""
    interval: timedelta | None
    """The interval length; ``None`` for cron."""
    _zone: ZoneInfo

    @property
    def cron(self) -> str | None:
        """The 5-field cron expression (macros expanded); ``None`` for intervals."""
        if self.kind != "cron":
            return None
        return _MACROS.get(self.expression, self.expression)

    # -- single steps ---------------------------------------------------------------------
    def next_after(self, after: datetime, *, anchor: datetime | None = None) -> datetime:
        """The first tick strictly after ``after``.

        Args:
            after: An aware instant.
            anchor: For intervals, any past or future tick; ticks are ``anchor + k*interval``.
                Without it the next tick is ``after + interval``. Ignored by cron.
        """
        after = _utc(after)
        if self.interval is not None:
            if anchor is None:
                return after + self.interval
            anchor = _utc(anchor)
            steps = (after - anchor) // self.interval + 1
            return anchor + steps * self.interval
        assert self.cron is not None
        local = after.astimezone(self._zone).replace(tzinfo=None)
        it = croniter(self.cron, local)
        for _ in range(_MAX_STEPS):
            candidate = self._to_utc(it.get_next(datetime))
            if candidate > after:
                return candidate
        raise ScheduleError(f"no tick of {self.expression!r} found after {after.isoformat()}")

    def latest_at_or_before(
        self, moment: datetime, *, anchor: datetime | None = None
    ) -> datetime | None:
        """The last tick at or before ``moment`` (for intervals: on the ``anchor`` grid).

        ``None`` for an interval without anchor.
        """
        moment = _utc(moment)
        if self.interval is not None:
            if anchor is None:
                return None
            anchor = _utc(anchor)
            return anchor + ((moment - anchor) // self.interval) * self.interval
        assert self.cron is not None
        # Candidates slightly after ``moment`` in wall time can map to instants before it in
        # a fall-back overlap, so start the backward walk a little later than ``moment``.
        local = (moment.astimezone(self._zone) + _DST_SLACK).replace(tzinfo=None)
        it = croniter(self.cron, local)
        for _ in range(_MAX_STEPS):
            try:
                candidate = self._to_utc(it.get_prev(datetime))
            except Exception:  # noqa: BLE001 - croniter found nothing earlier
                return None
            if candidate <= moment:
                return candidate
        return None

    def previous_before(
        self, moment: datetime, *, anchor: datetime | None = None
    ) -> datetime | None:
        """The last tick strictly before ``moment``."""
        moment = _utc(moment)
        return self.latest_at_or_before(moment - timedelta(microseconds=1), anchor=anchor)

    def _to_utc(self, wall: datetime) -> datetime:
        # fold=0: a wall time in a fall-back overlap is its first occurrence; a wall time in a
        # spring-forward gap takes the offset from before the gap, i.e. it moves forward by the
        # gap's length (02:00 -> 03:00). The mapping is monotonic in wall time.
        return wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class TickPlan:
    """What to do about the ticks due at ``now``; see :func:`plan_ticks`."""

    fire_times: list[datetime]
    """Ticks to enqueue a job for, oldest first (each one job, keyed by the tick)."""
    skipped: int
    """Due ticks not fired (missed-tick policy); a lower bound when very many were missed."""
    next_run_at: datetime
    """The first tick strictly after ``now``: the schedule's new ``next_run_at``."""


def plan_ticks(
    rec: Recurrence,
    *,
    next_run_at: datetime,
    now: datetime,
    policy: MissedTickPolicy = MissedTickPolicy.LATEST,
    max_catch_up: int = 10,
    grace: timedelta = DEFAULT_MISFIRE_GRACE,
) -> TickPlan:
    """Decide which due ticks fire when the scheduler looks at a schedule at ``now``.

    The due ticks are the ticks ``t`` with ``next_run_at <= t <= now``. The latest of them is
    on time when ``now - t <= grace``; every other due tick was missed.

    * ``latest`` (default): fire the latest due tick only, late or not.
    * ``skip``: fire the latest due tick only if it is on time; otherwise fire nothing.
    * ``all``: fire every due tick, at most the ``max_catch_up`` most recent ones.

    Args:
        rec: The schedule's recurrence; for intervals ``next_run_at`` anchors the grid.
        next_run_at: The schedule's stored next tick.
        now: The current instant (injected).
        policy: Missed-tick policy.
        max_catch_up: Bound for ``all``.
        grace: Lateness beyond which a tick counts as missed.

    Returns:
        The plan; ``fire_times`` is empty when nothing is due yet.
    """
    next_run_at = _utc(next_run_at)
    now = _utc(now)
    if next_run_at > now:
        return TickPlan([], 0, next_run_at)
    latest = rec.latest_at_or_before(now, anchor=next_run_at)
    following = rec.next_after(now, anchor=next_run_at)
    if latest is None or latest < next_run_at:
        # ``next_run_at`` was not on the current grid (expression changed): treat it as due.
        latest = next_run_at
    due: list[datetime] = [latest]
    if policy is MissedTickPolicy.ALL:
        cursor = latest
        while len(due) < max_catch_up:
            prev = rec.previous_before(cursor, anchor=next_run_at)
            if prev is None or prev < next_run_at:
                break
            due.append(prev)
            cursor = prev
        due.reverse()
        return TickPlan(due, _count_skipped(rec, next_run_at, due[0]), following)
    skipped = _count_skipped(rec, next_run_at, latest)
    if policy is MissedTickPolicy.SKIP and now - latest > grace:
        return TickPlan([], skipped + 1, following)
    return TickPlan([latest], skipped, following)


def _count_skipped(rec: Recurrence, first_due: datetime, oldest_fired: datetime) -> int:
    """Due ticks in ``[first_due, oldest_fired)`` (capped; exact for intervals)."""
    if oldest_fired <= first_due:
        return 0
    if rec.interval is not None:
        return (oldest_fired - first_due) // rec.interval
    count = 0
    cursor = first_due
    while cursor < oldest_fired and count < MAX_CATCH_UP_LIMIT:
        count += 1
        cursor = rec.next_after(cursor)
    return count


def as_missed_tick_policy(value: object) -> MissedTickPolicy:
    """Normalise a missed-tick policy (enum or its value)."""
    try:
        return MissedTickPolicy(value)
    except ValueError:
        choices = ", ".join(p.value for p in MissedTickPolicy)
        raise ScheduleError(f"missed_ticks must be one of {choices}, got {value!r:.40}") from None


def as_overlap_policy(value: object) -> OverlapPolicy:
    """Normalise an overlap policy (enum or its value)."""
    try:
        return OverlapPolicy(value)
    except ValueError:
        choices = ", ".join(p.value for p in OverlapPolicy)
        raise ScheduleError(f"overlap must be one of {choices}, got {value!r:.40}") from None


def as_max_catch_up(value: object) -> int:
    """Validate ``max_catch_up``: an integer from 1 to :data:`MAX_CATCH_UP_LIMIT`."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not (1 <= value <= MAX_CATCH_UP_LIMIT)
    ):
        raise ScheduleError(f"max_catch_up must be an integer from 1 to {MAX_CATCH_UP_LIMIT}")
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError("datetimes given to the recurrence functions must be aware")
    return value.astimezone(UTC)
