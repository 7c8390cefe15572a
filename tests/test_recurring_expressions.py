"""The pure recurrence module: parsing, timezones, DST rules, missed-tick plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobrunner import InvalidArgumentError, ScheduleError
from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._recurrence import (
    as_max_catch_up,
    as_missed_tick_policy,
    as_overlap_policy,
    parse_expression,
    parse_recurrence,
    plan_ticks,
    validate_timezone,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(expr: str, tz: str, start: datetime, count: int) -> list[datetime]:
    rec = parse_recurrence(expr, tz)
    out = []
    t = start
    for _ in range(count):
        t = rec.next_after(t)
        out.append(t)
    return out


# -- parsing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "normalised", "seconds"),
    [
        ("1 seconds", "1 second", 1),
        ("1 second", "1 second", 1),
        ("2 seconds", "2 seconds", 2),
        ("5 minutes", "5 minutes", 300),
        ("1 minute", "1 minute", 60),
        ("24 hours", "24 hours", 86400),
        ("1 hour", "1 hour", 3600),
        ("7 days", "7 days", 7 * 86400),
        ("1 day", "1 day", 86400),
        ("  5   MINUTES ", "5 minutes", 300),
        ("10minutes", "10 minutes", 600),
    ],
)
def test_intervals(text: str, normalised: str, seconds: int) -> None:
    kind, norm, interval = parse_expression(text)
    assert (kind, norm) == ("interval", normalised)
    assert interval == timedelta(seconds=seconds)


def test_24_hours_is_an_interval_never_cron() -> None:
    rec = parse_recurrence("24 hours", "Europe/Berlin")
    assert rec.kind == "interval" and rec.cron is None
    # Elapsed time, not wall clock: across the spring-forward night it is still 24 h.
    start = utc(2024, 3, 30, 12)
    assert rec.next_after(start) == start + timedelta(hours=24)


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("0 0 * * *", "0 0 * * *"),
        ("*/15  9-17 * * mon-fri", "*/15 9-17 * * mon-fri"),
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@DAILY", "0 0 * * *"),
        ("0 0 L * *", "0 0 L * *"),
    ],
)
def test_cron_expressions(text: str, cron: str) -> None:
    rec = parse_recurrence(text)
    assert rec.kind == "cron"
    assert rec.cron == cron
    assert rec.interval is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0 seconds",
        "-1 minutes",
        "5 weeks",
        "5 fortnights",
        "minutes",
        "1.5 hours",
        "every 5 minutes",
        "* * * *",
        "0 0 * * * *",  # 6 fields (seconds) are not accepted
        "0 0 1 1 * 2030",
        "61 * * * *",
        "* 25 * * *",
        "*/0 * * * *",
        "x y z w v",
        "@every 5m",
        "@reboot",
        "0 0 31 2 *",  # never fires
        "9999999999 seconds",
        "4000 days",
        "0 0 * * *" * 50,
    ],
)
def test_bad_expressions(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_recurrence(text)


@pytest.mark.parametrize("value", [None, 5, b"5 minutes", ["0 0 * * *"]])
def test_expression_must_be_a_string(value: object) -> None:
    with pytest.raises(ScheduleError):
        parse_expression(value)


def test_schedule_error_is_an_invalid_argument_error() -> None:
    with pytest.raises(InvalidArgumentError):
        parse_recurrence("nonsense")


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_good_timezones(tz: str) -> None:
    assert validate_timezone(tz).key == tz
    assert parse_recurrence("0 0 * * *", tz).timezone == tz


@pytest.mark.parametrize(
    "tz",
    [
        "",
        "Mars/Olympus_Mons",
        "Europe/Berlinn",
        "../../etc/passwd",
        "/etc/localtime",
        None,
        5,
        "+02:00",
    ],
)
def test_bad_timezones(tz: object) -> None:
    with pytest.raises(ScheduleError):
        parse_recurrence("0 0 * * *", tz)
    with pytest.raises(ScheduleError):
        parse_recurrence("5 minutes", tz)  # validated for intervals too


def test_policy_validators() -> None:
    assert as_missed_tick_policy("all") is MissedTickPolicy.ALL
    assert as_overlap_policy(OverlapPolicy.SKIP) is OverlapPolicy.SKIP
    assert as_max_catch_up(1) == 1
    for bad in ("sometimes", None, 3):
        with pytest.raises(ScheduleError):
            as_missed_tick_policy(bad)
        with pytest.raises(ScheduleError):
            as_overlap_policy(bad)
    for bad_n in (0, -1, 1001, 2.5, True, "3"):
        with pytest.raises(ScheduleError):
            as_max_catch_up(bad_n)


def test_naive_datetimes_are_rejected() -> None:
    rec = parse_recurrence("5 minutes")
    with pytest.raises(ScheduleError):
        rec.next_after(datetime(2024, 1, 1))


# -- next fire -----------------------------------------------------------------------------
def test_cron_in_a_timezone() -> None:
    got = ticks("0 9 * * *", "America/New_York", utc(2024, 1, 1), 2)
    assert got == [utc(2024, 1, 1, 14), utc(2024, 1, 2, 14)]
    assert all(t.tzinfo is UTC for t in got)


def test_next_after_is_strict() -> None:
    rec = parse_recurrence("0 * * * *")
    assert rec.next_after(utc(2024, 1, 1, 10)) == utc(2024, 1, 1, 11)
    assert rec.next_after(utc(2024, 1, 1, 10, 0, 0) - timedelta(microseconds=1)) == utc(
        2024, 1, 1, 10
    )


def test_interval_grid_with_anchor() -> None:
    rec = parse_recurrence("5 minutes")
    anchor = utc(2024, 1, 1, 0, 0, 7)
    assert rec.next_after(utc(2024, 1, 1, 0, 12), anchor=anchor) == utc(2024, 1, 1, 0, 15, 7)
    assert rec.next_after(utc(2024, 1, 1, 0, 15, 7), anchor=anchor) == utc(2024, 1, 1, 0, 20, 7)
    assert rec.latest_at_or_before(utc(2024, 1, 1, 0, 15, 7), anchor=anchor) == utc(
        2024, 1, 1, 0, 15, 7
    )
    assert rec.previous_before(utc(2024, 1, 1, 0, 15, 7), anchor=anchor) == utc(
        2024, 1, 1, 0, 10, 7
    )
    assert rec.next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 5)


# -- daylight saving -------------------------------------------------------------------------
def test_dst_gap_runs_once_at_three() -> None:
    """Berlin, last Sunday of March 2024: 02:00 does not exist; the 02:00 job runs at 03:00."""
    got = ticks("0 2 * * *", "Europe/Berlin", utc(2024, 3, 29, 12), 4)
    local = [t.astimezone(BERLIN) for t in got]
    assert [(t.day, t.hour, t.minute) for t in local] == [
        (30, 2, 0),
        (31, 3, 0),
        (1, 2, 0),
        (2, 2, 0),
    ]
    assert got[1] == utc(2024, 3, 31, 1)  # 03:00 CEST, the instant the clocks jumped
    # No day lost: exactly one run per calendar day.
    assert len({t.date() for t in local}) == 4


def test_dst_gap_shifts_by_the_gap_length() -> None:
    got = ticks("30 2 * * *", "Europe/Berlin", utc(2024, 3, 30, 12), 2)
    assert [t.astimezone(BERLIN).strftime("%d %H:%M %Z") for t in got] == [
        "31 03:30 CEST",
        "01 02:30 CEST",
    ]


def test_dst_gap_coinciding_ticks_fire_once() -> None:
    # 02:00 (moved to 03:00) and 03:00 are the same instant on the gap day: one tick.
    got = ticks("0 2,3 * * *", "Europe/Berlin", utc(2024, 3, 30, 12), 4)
    assert len(got) == len(set(got))
    assert [t.astimezone(BERLIN).strftime("%d %H:%M") for t in got] == [
        "31 03:00",
        "01 02:00",
        "01 03:00",
        "02 02:00",
    ]


def test_dst_overlap_runs_once() -> None:
    """Berlin, last Sunday of October 2024: 02:00 happens twice; the job runs once (first)."""
    got = ticks("0 2 * * *", "Europe/Berlin", utc(2024, 10, 25, 12), 4)
    assert got == [
        utc(2024, 10, 26, 0),  # 02:00 CEST
        utc(2024, 10, 27, 0),  # 02:00 CEST, first occurrence; not again at 01:00Z (02:00 CET)
        utc(2024, 10, 28, 1),  # 02:00 CET
        utc(2024, 10, 29, 1),
    ]


def test_dst_overlap_from_inside_the_repeated_hour() -> None:
    rec = parse_recurrence("30 2 * * *", "Europe/Berlin")
    # 02:10 CET, the second pass through 02:xx: 02:30 already ran (in CEST) -> next day.
    second_pass = utc(2024, 10, 27, 1, 10)
    assert rec.next_after(second_pass) == utc(2024, 10, 28, 1, 30)
    first_pass = utc(2024, 10, 27, 0, 10)  # 02:10 CEST
    assert rec.next_after(first_pass) == utc(2024, 10, 27, 0, 30)


def test_dst_new_york_gap_and_overlap() -> None:
    gap = ticks("30 2 * * *", "America/New_York", utc(2024, 3, 9, 12), 2)
    assert [t.astimezone(ZoneInfo("America/New_York")).strftime("%d %H:%M") for t in gap] == [
        "10 03:30",
        "11 02:30",
    ]
    overlap = ticks("30 1 * * *", "America/New_York", utc(2024, 11, 2, 12), 3)
    assert overlap == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30), utc(2024, 11, 5, 6, 30)]


@pytest.mark.parametrize(
    ("expr", "tz"),
    [
        ("*/20 * * * *", "Europe/Berlin"),
        ("0 2 * * *", "Europe/Berlin"),
        ("15 1,2,3 * * *", "America/New_York"),
        ("0 0 * * *", "Australia/Lord_Howe"),
    ],
)
def test_forward_and_backward_agree_across_dst(expr: str, tz: str) -> None:
    """Ticks strictly increase, and latest_at_or_before / previous_before invert next_after."""
    rec = parse_recurrence(expr, tz)
    # Start the evening before each transition (spring and autumn of the zone).
    starts = {
        "Europe/Berlin": (utc(2024, 3, 30, 20), utc(2024, 10, 26, 20)),
        "America/New_York": (utc(2024, 3, 10, 2), utc(2024, 11, 3, 2)),
        "Australia/Lord_Howe": (utc(2024, 4, 6, 10), utc(2024, 10, 5, 10)),
    }[tz]
    for start in starts:
        t = start
        prev = rec.latest_at_or_before(start)
        for _ in range(30):
            nxt = rec.next_after(t)
            assert nxt > t
            assert rec.latest_at_or_before(nxt) == nxt
            assert rec.previous_before(nxt) == prev
            assert rec.latest_at_or_before(nxt - timedelta(seconds=1)) == prev
            prev = t = nxt


# -- missed ticks ----------------------------------------------------------------------------
EVERY_5 = parse_recurrence("5 minutes")
T0 = utc(2024, 1, 1, 12)


def test_plan_not_due() -> None:
    plan = plan_ticks(EVERY_5, next_run_at=T0, now=T0 - timedelta(seconds=1))
    assert plan.fire_times == [] and plan.skipped == 0 and plan.next_run_at == T0


def test_plan_on_time_fires_the_tick_under_every_policy() -> None:
    for policy in MissedTickPolicy:
        plan = plan_ticks(EVERY_5, next_run_at=T0, now=T0 + timedelta(seconds=2), policy=policy)
        assert plan.fire_times == [T0], policy
        assert plan.skipped == 0
        assert plan.next_run_at == T0 + timedelta(minutes=5)


def test_plan_latest() -> None:
    now = T0 + timedelta(minutes=62)
    plan = plan_ticks(EVERY_5, next_run_at=T0, now=now, policy=MissedTickPolicy.LATEST)
    assert plan.fire_times == [T0 + timedelta(minutes=60)]
    assert plan.skipped == 12
    assert plan.next_run_at == T0 + timedelta(minutes=65)


def test_plan_skip() -> None:
    late = plan_ticks(
        EVERY_5, next_run_at=T0, now=T0 + timedelta(minutes=62), policy=MissedTickPolicy.SKIP
    )
    assert late.fire_times == [] and late.skipped == 13
    assert late.next_run_at == T0 + timedelta(minutes=65)
    # The latest tick is within the grace period: it is on time, not missed.
    fresh = plan_ticks(
        EVERY_5,
        next_run_at=T0,
        now=T0 + timedelta(minutes=60, seconds=30),
        policy=MissedTickPolicy.SKIP,
    )
    assert fresh.fire_times == [T0 + timedelta(minutes=60)] and fresh.skipped == 12


def test_plan_all_is_bounded() -> None:
    now = T0 + timedelta(minutes=62)
    plan = plan_ticks(EVERY_5, next_run_at=T0, now=now, policy=MissedTickPolicy.ALL, max_catch_up=3)
    assert plan.fire_times == [T0 + timedelta(minutes=m) for m in (50, 55, 60)]
    assert plan.skipped == 10
    every = plan_ticks(
        EVERY_5, next_run_at=T0, now=now, policy=MissedTickPolicy.ALL, max_catch_up=100
    )
    assert every.fire_times == [T0 + timedelta(minutes=5 * k) for k in range(13)]
    assert every.skipped == 0


def test_plan_cron_all_across_days() -> None:
    rec = parse_recurrence("0 2 * * *", "Europe/Berlin")
    first = rec.next_after(utc(2024, 3, 28, 12))
    plan = plan_ticks(rec, next_run_at=first, now=utc(2024, 4, 2, 12), policy=MissedTickPolicy.ALL)
    assert [t.astimezone(BERLIN).strftime("%m-%d %H:%M") for t in plan.fire_times] == [
        "03-29 02:00",
        "03-30 02:00",
        "03-31 03:00",
        "04-01 02:00",
        "04-02 02:00",
    ]
    assert plan.next_run_at == utc(2024, 4, 3, 0)


def test_plan_huge_outage_is_cheap() -> None:
    rec = parse_recurrence("* * * * *")
    plan = plan_ticks(
        rec,
        next_run_at=utc(2020, 1, 1),
        now=utc(2024, 1, 1, 0, 0, 30),
        policy=MissedTickPolicy.LATEST,
    )
    assert plan.fire_times == [utc(2024, 1, 1)]
    assert plan.skipped >= 1000  # a lower bound when very many were missed
    one_second = parse_recurrence("1 second")
    plan2 = plan_ticks(
        one_second,
        next_run_at=utc(2020, 1, 1),
        now=utc(2024, 1, 1),
        policy=MissedTickPolicy.ALL,
        max_catch_up=5,
    )
    assert len(plan2.fire_times) == 5 and plan2.fire_times[-1] == utc(2024, 1, 1)
