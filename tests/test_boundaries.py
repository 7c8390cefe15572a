"""Validation at every boundary (issue 13): every public runner method, async and sync, on
PostgreSQL (and on the in-memory runner where it has the method) refuses values outside the
documented bounds (docs/reference/configuration.md, "Limits") with a typed error naming the
field, and writes nothing: the ``jobs``, ``job_details`` and ``schedules`` tables (every table
of the schema, in fact) are fingerprinted before and after each call.

Also here: the regression tests of the issue's symptoms that are about bounds (RetryPolicy,
extreme timestamps, lone surrogates, NUL, waits, bulk totals, worker options, a caller's
transaction left usable) and rows holding extreme timestamps written by hand-written SQL,
which must not break any listing (API, CLI, dashboard). The CLI and dashboard bad-input tables
are in tests/test_hostile_input.py.

Adding a case is one line in a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from jobrunner import (
    ALL_TENANTS,
    DatabaseError,
    InvalidArgumentError,
    JobHandlerRegistry,
    JobRunnerError,
    JobStatus,
    JobTimeoutError,
    Retry,
    RetryPolicy,
    ScheduleError,
    SyncJobRunner,
)
from jobrunner import _limits as bounds
from jobrunner import _validation as checks
from jobrunner._db._database import Database
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main as cli_main
from jobrunner.testing import InMemoryJobRunner

TENANT = uuid.UUID("0badf00d-0000-4000-8000-00000000b0d5")
LONE = "\ud800"  # a lone surrogate: not valid Unicode, cannot be encoded to UTF-8
ESCAPED = "\udcff"  # what surrogateescape makes of an undecodable byte (argv, file names)
NUL = "\x00"
PLUS5 = timezone(timedelta(hours=5))
MINUS5 = timezone(timedelta(hours=-5))
BEFORE_YEAR_1 = datetime(1, 1, 1, 3, 0, tzinfo=PLUS5)  # 0000-12-31 22:00 UTC: 1 BC
AFTER_9999 = datetime(9999, 12, 31, 22, 0, tzinfo=MINUS5)  # 10000-01-01 03:00 UTC
DT_MAX = datetime.max.replace(tzinfo=UTC)
DT_MIN = datetime.min.replace(tzinfo=UTC)
SOME_ID = "6f1c3a52-8e7b-4c1d-9a0e-2b3c4d5e6f70"

IAE = InvalidArgumentError

ALL = ("postgres", "memory", "sync")
DB = ("postgres", "sync")


@dataclass(frozen=True)
class Case:
    """One refused call: ``method(*args, **kwargs)`` raises ``expected`` on ``backends``."""

    id: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    expected: type[BaseException] = IAE
    backends: tuple[str, ...] = ALL
    mentions: str | None = None
    """A word the message must contain (the field's name)."""


CASES: list[Case] = [
    # -- text: NUL and lone surrogates, in names, keys, payload keys and values ----------------
    Case("name-surrogate", "schedule_job", (f"job{LONE}",), mentions="job name"),
    Case("data-value-surrogate", "schedule_job", ("ok", {"x": LONE}), mentions="data"),
    Case("data-key-surrogate", "schedule_job", ("ok", {LONE: 1}), mentions="data"),
    Case("data-nested-surrogate", "schedule_job", ("ok", {"a": [{"b": ESCAPED}]})),
    Case("data-key-nul", "schedule_job", ("ok", {f"a{NUL}": 1}), mentions="NUL"),
    Case("data-nested-nul", "schedule_job", ("ok", {"a": {"b": [f"x{NUL}"]}}), mentions="NUL"),
    Case("data-pair-of-surrogates", "schedule_job", ("ok", {"x": "\ud83d\ude00"})),
    Case("metadata-surrogate", "schedule_job", ("ok", {}), {"metadata": {"m": LONE}}),
    Case(
        "metadata-key-nul",
        "schedule_job",
        ("ok", {}),
        {"metadata": {f"k{NUL}": 1}},
        mentions="metadata",
    ),
    Case("singleton-surrogate", "schedule_job", ("ok",), {"singleton_key": LONE}),
    Case("singleton-nul", "schedule_job", ("ok",), {"singleton_key": f"k{NUL}"}),
    Case("singleton-too-long", "schedule_job", ("ok",), {"singleton_key": "k" * 501}),
    Case("queue-surrogate", "schedule_job", ("ok",), {"queue": LONE}, mentions="queue"),
    Case("queue-nul", "schedule_job", ("ok",), {"queue": f"q{NUL}"}, mentions="queue"),
    Case("user-surrogate", "schedule_job", ("ok",), {"user_id": LONE}),
    Case("tenant-surrogate", "schedule_job", ("ok",), {"tenant": LONE}),
    # -- timestamps: within PostgreSQL's (and Python's) range after conversion to UTC ---------
    Case("run-at-before-year-1", "schedule_job_at", ("ok", {}, BEFORE_YEAR_1), mentions="run_at"),
    Case("run-at-after-9999", "schedule_job_at", ("ok", {}, AFTER_9999), mentions="run_at"),
    Case("run-at-max", "schedule_job_at", ("ok", {}, DT_MAX)),
    Case("run-at-min", "schedule_job_at", ("ok", {}, DT_MIN)),
    Case("run-at-plus-data", "schedule_job_at", ("ok", {"x": LONE}, datetime.now(UTC))),
    # -- bulk ----------------------------------------------------------------------------------
    Case("bulk-run-at-before-year-1", "schedule_jobs", ("ok", [{}]), {"run_at": BEFORE_YEAR_1}),
    Case("bulk-run-at-max", "schedule_jobs", ("ok", [{}]), {"run_at": DT_MAX}),
    Case("bulk-one-surrogate", "schedule_jobs", ("ok", [{"a": 1}, {"b": LONE}]), mentions="[1]"),
    Case("bulk-one-nul-key", "schedule_jobs", ("ok", [{}, {}, {f"{NUL}": 1}]), mentions="[2]"),
    Case("bulk-metadata-surrogate", "schedule_jobs", ("ok", [{}]), {"metadata": {"m": LONE}}),
    Case("bulk-list-item", "schedule_jobs", ("ok", [{}, ["a", "list"]]), mentions="data[1]"),
    Case("bulk-not-iterable", "schedule_jobs", ("ok", 3.5)),
    # -- recurring -----------------------------------------------------------------------------
    Case("cron-nul", "schedule_recurring_job", ("ok", {}, f"0 0 * * *{NUL}"), {}, ScheduleError),
    Case("cron-surrogate", "schedule_recurring_job", ("ok", {}, f"5 minutes{LONE}"), {}, IAE),
    Case("interval-too-long", "schedule_recurring_job", ("ok", {}, "999999999 days"), {}, IAE),
    Case("timezone-nul", "schedule_recurring_job", ("ok", {}, "@daily"), {"timezone": "UTC\x00"}),
    Case("timezone-surrogate", "schedule_recurring_job", ("ok", {}, "@daily"), {"timezone": LONE}),
    Case("recurring-data-surrogate", "schedule_recurring_job", ("ok", {"x": LONE}, "@daily")),
    Case(
        "recurring-key-surrogate",
        "schedule_recurring_job",
        ("ok", {}, "@daily"),
        {"singleton_key": LONE},
    ),
    Case(
        "recurring-metadata-nul",
        "schedule_recurring_job",
        ("ok", {}, "@daily"),
        {"metadata": {"m": NUL}},
    ),
    Case("recurring-queue-nul", "schedule_recurring_job", ("ok", {}, "@daily"), {"queue": NUL}),
    Case("schedules-tenant-surrogate", "list_schedules", (), {"tenant": LONE}),
    Case("pause-surrogate", "pause_schedule", (LONE,)),
    Case("resume-tenant-nul", "resume_schedule", (SOME_ID,), {"tenant": NUL}),
    # -- cancel: reason and canceller -------------------------------------------------------
    Case("cancel-reason-nul", "cancel_job", (SOME_ID,), {"reason": f"a{NUL}b"}, mentions="reason"),
    Case("cancel-reason-surrogate", "cancel_job", (SOME_ID,), {"reason": LONE}, mentions="reason"),
    Case("cancel-reason-too-long", "cancel_job", (SOME_ID,), {"reason": "r" * 2001}),
    Case("cancel-by-nul", "cancel_job", (SOME_ID,), {"cancelled_by": NUL}, mentions="cancelled_by"),
    Case("cancel-by-surrogate", "cancel_job", (SOME_ID,), {"cancelled_by": ESCAPED}),
    Case("cancel-id-surrogate", "cancel_job", (LONE,)),
    # -- ids and tenants -----------------------------------------------------------------------
    Case("status-surrogate", "get_job_status", (LONE,)),
    Case("status-long", "get_job_status", ("a" * 10_000,)),
    Case("details-tenant-surrogate", "get_job_details", (SOME_ID,), {"tenant": LONE}),
    Case("retry-nul", "retry_job", (NUL,)),
    # -- listing filters -----------------------------------------------------------------------
    Case("search-surrogate", "list_jobs", (), {"search": LONE}, mentions="search"),
    Case("search-nul", "list_jobs", (), {"search": f"a{NUL}"}, mentions="search"),
    Case("name-filter-surrogate", "list_jobs", (), {"name": ESCAPED}, mentions="name"),
    Case("runner-type-nul", "list_jobs", (), {"runner_type": NUL}),
    Case("cursor-surrogate", "list_jobs", (), {"cursor": LONE}),
    Case("before-before-year-1", "list_jobs", (), {"created_before": BEFORE_YEAR_1}),
    Case("after-after-9999", "list_jobs", (), {"created_after": AFTER_9999}),
    Case("before-max", "list_jobs", (), {"created_before": DT_MAX}, mentions="created_before"),
    Case("after-min", "list_jobs", (), {"created_after": DT_MIN}, mentions="created_after"),
    Case("metrics-tenant-nul", "get_metrics", (), {"tenant": NUL}),
    # -- history -------------------------------------------------------------------------------
    Case("clear-huge", "clear_history", (), {"older_than": 1e20}, mentions="older_than"),
    Case("clear-inf", "clear_history", (), {"older_than": math.inf}),
    Case("clear-days", "clear_history", (), {"older_than": timedelta(days=36_501)}),
    Case("clear-int-overflow", "clear_history", (), {"older_than": 10**400}),
    Case("clear-tenant-surrogate", "clear_history", (), {"tenant": LONE}),
    Case("clear-scope-list", "clear_history", (), {"scope": ["all"]}),
    # -- waits ---------------------------------------------------------------------------------
    Case("wait-timeout-str", "wait_for_job", (SOME_ID,), {"timeout": "1"}, mentions="timeout"),
    Case("wait-timeout-nan", "wait_for_job", (SOME_ID,), {"timeout": math.nan}),
    Case("wait-timeout-negative", "wait_for_job", (SOME_ID,), {"timeout": -1}),
    Case("wait-timeout-inf", "wait_for_job", (SOME_ID,), {"timeout": math.inf}),
    Case("wait-timeout-zero", "wait_for_job", (SOME_ID,), {"timeout": 0}),
    Case("wait-timeout-huge", "wait_for_job", (SOME_ID,), {"timeout": 1e20}),
    Case("wait-timeout-bool", "wait_for_job", (SOME_ID,), {"timeout": True}),
    Case("wait-poll-zero", "wait_for_job", (SOME_ID,), {"timeout": 1, "poll_interval": 0}),
    Case("wait-poll-nan", "wait_for_job", (SOME_ID,), {"poll_interval": math.nan}),
    Case("wait-poll-huge", "wait_for_job", (SOME_ID,), {"poll_interval": 1e9}),
    Case("wait-id-surrogate", "wait_for_job", (LONE,), {"timeout": 1}),
    # -- PostgreSQL-only methods ---------------------------------------------------------------
    Case("start-timeout-huge", "start", (), {"timeout": 1e20}, backends=("postgres",)),
    Case("start-timeout-nan", "start", (), {"timeout": math.nan}, backends=("postgres",)),
    Case("flow-metrics-tenant", "flow_metrics", (), {"tenant": LONE}, backends=("postgres",)),
    # -- flow control (runner.flow, and the sync twin's) ----------------------------------------
    Case(
        "flow-rate-per-huge",
        "flow.set_rate_limit",
        (),
        {"name": "ok", "count": 1, "per": 1e20},
        backends=DB,
    ),
    Case(
        "flow-rate-per-nan",
        "flow.set_rate_limit",
        (),
        {"name": "ok", "count": 1, "per": math.nan},
        backends=DB,
    ),
    Case(
        "flow-limit-huge",
        "flow.set_concurrency_limit",
        (),
        {"name": "ok", "limit": 2**40},
        backends=DB,
    ),
    Case(
        "flow-limit-name-surrogate",
        "flow.set_concurrency_limit",
        (),
        {"name": LONE, "limit": 1},
        backends=DB,
    ),
    Case("flow-weight-nan", "flow.set_tenant_weight", (TENANT, math.nan), backends=DB),
    Case("flow-pause-tenant-nul", "flow.pause", (), {"tenant": NUL}, backends=DB),
    Case("flow-purge-queue-nul", "flow.purge_tenant", (TENANT,), {"queue": NUL}, backends=DB),
    Case("flow-limits-tenant-surrogate", "flow.get_limits", (), {"tenant": LONE}, backends=DB),
]

# Worker options (PostgreSQL WorkerSettings.build); the in-memory runner's workers take the
# same options through create_worker.
WORKER_CASES: list[tuple[str, dict[str, Any]]] = [
    ("lease-1e20", {"lease_seconds": 1e20}),
    ("lease-inf", {"lease_seconds": math.inf}),
    ("lease-nan", {"lease_seconds": math.nan}),
    ("lease-over-a-day", {"lease_seconds": 86_401}),
    ("lease-timedelta", {"lease_seconds": timedelta(days=2)}),
    ("poll-huge", {"poll_interval": 1e10}),
    ("heartbeat-nan", {"heartbeat_interval": math.nan}),
    ("heartbeat-not-below-lease", {"lease_seconds": 10, "heartbeat_interval": 10}),
    ("rescue-huge", {"rescue_interval": 1e12}),
    ("grace-negative", {"shutdown_grace": -1}),
    ("grace-huge", {"shutdown_grace": 1e9}),
    ("flush-inf", {"flush_interval": math.inf}),
    ("probe-zero", {"listen_probe_interval": 0}),
    ("concurrency-2**40", {"concurrency": 2**40}),
    ("claim-batch-huge", {"claim_batch": 10**9}),
    ("flush-max-zero", {"flush_max": 0}),
    ("sync-threads-bool", {"sync_threads": True}),
    ("queues-surrogate", {"queues": ["default", LONE]}),
    ("queues-int", {"queues": 5}),
    ("queues-bytes", {"queues": b"default"}),
    ("worker-id-surrogate", {"worker_id": LONE}),
    ("fair-str", {"fair": "yes"}),
    ("scheduler-int", {"run_scheduler": 1}),
]


def _handler(ctx: Any, data: dict[str, Any]) -> None:
    return None


def _registry() -> JobHandlerRegistry:
    registry = JobHandlerRegistry()
    registry.add("ok", _handler)
    return registry


@pytest.fixture(scope="module")
def env(jobrunner_dsn: str) -> Iterator[dict[str, Any]]:
    """One schema for the module holding a queued job, a schedule and history, plus the sync
    twin over it."""
    schema = f"jrt_bounds_{uuid.uuid4().hex[:10]}"
    registry = _registry()
    asyncio.run(Database(jobrunner_dsn, schema=schema).migrate())
    sync = SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2)
    )
    sync.schedule_job("ok", {"n": 1}, tenant=TENANT, metadata={"m": "é😀"})
    sync.schedule_recurring_job("ok", {}, "@daily", tenant=TENANT)
    try:
        yield {"dsn": jobrunner_dsn, "schema": schema, "registry": registry, "sync": sync}
    finally:
        sync.close()
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def fingerprint(dsn: str, schema: str) -> dict[str, str]:
    """Row count and a hash of the rows of every table of the schema."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY 1",
                (schema,),
            ).fetchall()
        ]
        prints = {}
        for table in tables:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, ',' ORDER BY "
                    "t::text), '')) FROM {}.{} t"
                ).format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchone()
            prints[table] = str(row[0]) if row else ""
    assert {"jobs", "job_details", "schedules"} <= prints.keys()
    return prints


@contextlib.contextmanager
def writes_nothing(env: dict[str, Any]) -> Iterator[None]:
    before = fingerprint(env["dsn"], env["schema"])
    yield
    assert fingerprint(env["dsn"], env["schema"]) == before, "a refused call wrote something"


async def memory_state(runner: InMemoryJobRunner) -> str:
    """Everything the in-memory runner holds, through its public API."""
    page = await runner.list_jobs(tenant=ALL_TENANTS, limit=500)
    details = [await runner.get_job_details(j.job_id, tenant=j.tenant) for j in page.jobs]
    schedules = [await runner.list_schedules(tenant=t) for t in (None, TENANT)]
    return repr((page, details, schedules))


def check_error(exc: BaseException, case: Case) -> None:
    assert isinstance(exc, case.expected), f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, JobRunnerError), f"{type(exc).__name__} is not a JobRunnerError"
    message = str(exc)
    assert message.strip(), "the error has no message"
    if case.mentions is not None:
        assert case.mentions in message, message


def _method(target: Any, dotted: str) -> Any:
    """``runner.flow.pause`` from ``"flow.pause"``."""
    for part in dotted.split("."):
        target = getattr(target, part)
    return target


def _cases(backend: str) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES if backend in c.backends]


@pytest.mark.parametrize("case", _cases("postgres"))
async def test_postgres_runner_refuses(env: dict[str, Any], case: Case) -> None:
    runner = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    try:
        with writes_nothing(env), pytest.raises(BaseException) as info:
            await _method(runner, case.method)(*case.args, **case.kwargs)
        check_error(info.value, case)
    finally:
        await runner.close()


@pytest.mark.parametrize("case", _cases("sync"))
def test_sync_runner_refuses(env: dict[str, Any], case: Case) -> None:
    with writes_nothing(env), pytest.raises(BaseException) as info:
        _method(env["sync"], case.method)(*case.args, **case.kwargs)
    check_error(info.value, case)


@pytest.mark.parametrize("case", _cases("memory"))
async def test_memory_runner_refuses(case: Case) -> None:
    runner = InMemoryJobRunner(registry=_registry())
    await runner.schedule_job("ok", {"n": 1}, tenant=TENANT)
    await runner.schedule_recurring_job("ok", {}, "@daily", tenant=TENANT)
    before = await memory_state(runner)
    with pytest.raises(BaseException) as info:
        await _method(runner, case.method)(*case.args, **case.kwargs)
    check_error(info.value, case)
    assert await memory_state(runner) == before


@pytest.mark.parametrize(("case", "options"), WORKER_CASES, ids=[c[0] for c in WORKER_CASES])
async def test_worker_options_refused(
    env: dict[str, Any], case: str, options: dict[str, Any]
) -> None:
    runner = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    with writes_nothing(env), pytest.raises(InvalidArgumentError) as info:
        runner.create_worker(**options)
    assert str(info.value).strip()


def test_the_bounds_are_consistent() -> None:
    """The documented bounds keep every computed value storable."""
    gigabyte = 1_000_000_000
    # A bulk batch travels as one parameter: PostgreSQL refuses values over 1 GB.
    assert bounds.MAX_PAYLOAD_BYTES < bounds.MAX_BULK_PAYLOAD_BYTES < gigabyte // 2
    # now() + the longest interval is still a timestamp Python can load.
    assert (
        datetime(2200, 1, 1, tzinfo=UTC) + timedelta(seconds=bounds.MAX_INTERVAL_SECONDS)
        < bounds.MAX_TIMESTAMP
    )
    from jobrunner._outcome import MAX_RETRY_DELAY

    assert datetime(2200, 1, 1, tzinfo=UTC) + timedelta(seconds=MAX_RETRY_DELAY) < (
        bounds.MAX_TIMESTAMP
    )
    assert bounds.MAX_ATTEMPTS < 2**31  # an INTEGER column
    assert datetime.min.replace(tzinfo=UTC) + timedelta(hours=23) < bounds.MIN_TIMESTAMP
    assert datetime.max.replace(tzinfo=UTC) - timedelta(hours=23) > bounds.MAX_TIMESTAMP


# -- regression tests of the issue's symptoms --------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"initial_interval": 1e300, "max_interval": 1e300},
        {"max_interval": 1e300},
        {"initial_interval": bounds.MAX_INTERVAL_SECONDS + 1},
        {"initial_interval": timedelta(days=365 * 11)},
        {"max_attempts": 2**40},
        {"max_attempts": 1_000_001},
        {"initial_interval": math.nan},
        {"max_interval": math.inf},
        {"initial_interval": 60, "max_interval": 30},
        {"non_retryable_errors": [f"Error{NUL}"]},
        {"non_retryable_errors": [LONE]},
        {"non_retryable_errors": [""]},
    ],
    ids=repr,
)
def test_retry_policy_refuses_values_out_of_bounds(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(**options)


def test_retry_policy_max_interval_follows_initial_interval() -> None:
    """``RetryPolicy(initial_interval=60)`` alone works; the maximum is derived from it."""
    assert RetryPolicy().max_seconds == 30.0  # the defaults are unchanged
    policy = RetryPolicy(initial_interval=60)
    assert policy.max_seconds == 1800.0
    assert policy.delay_after(1, rand=lambda: 0.5) == 60.0
    assert policy.delay_after(10, rand=lambda: 0.5) == 1800.0
    assert RetryPolicy(initial_interval=0.1).max_seconds == 30.0
    assert RetryPolicy(initial_interval=bounds.MAX_INTERVAL_SECONDS).max_seconds == (
        bounds.MAX_INTERVAL_SECONDS
    )
    assert RetryPolicy(initial_interval=timedelta(minutes=5)).max_seconds == 9000.0
    # An explicit maximum is kept; equal policies compare and print equal.
    assert RetryPolicy(initial_interval=60, max_interval=120).max_seconds == 120.0
    assert policy == RetryPolicy(initial_interval=60, max_interval=1800)
    assert "max_interval=1800.0" in repr(policy)
    assert hash(policy) == hash(RetryPolicy(initial_interval=60.0, max_interval=1800.0))
    with pytest.raises(AttributeError):
        policy.max_interval = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "delay",
    [-1, math.nan, math.inf, 1e20, bounds.MAX_INTERVAL_SECONDS + 1, "5", True, timedelta(-1)],
    ids=repr,
)
def test_retry_delay_bounds(delay: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="Retry delay"):
        Retry(delay)
    assert Retry(bounds.MAX_INTERVAL_SECONDS).delay == bounds.MAX_INTERVAL_SECONDS


def test_handler_timeout_is_bounded() -> None:
    registry = JobHandlerRegistry()
    for timeout in (1e20, math.inf, math.nan, timedelta(days=365 * 11)):
        with pytest.raises(InvalidArgumentError):
            registry.add("slow", _handler, timeout=timeout)
    assert registry.find("slow") is None
    assert registry.add("slow", _handler, timeout=bounds.MAX_TIMEOUT_SECONDS).timeout == (
        bounds.MAX_TIMEOUT_SECONDS
    )


def test_values_at_the_bounds_are_accepted_and_read_back(env: dict[str, Any]) -> None:
    """The bounds are inclusive, and what is accepted is stored and loads back unchanged."""
    sync = env["sync"]
    early = sync.schedule_job_at("ok", {}, bounds.MIN_TIMESTAMP, tenant=uuid.uuid4())
    late_tenant = uuid.uuid4()
    late = sync.schedule_job_at(
        "ok", {"é": "😀", "k": "\\u0000 is text"}, bounds.MAX_TIMESTAMP, tenant=late_tenant
    )
    info = sync.get_job_status(late.job_id, tenant=late_tenant)
    assert info is not None and info.run_at == bounds.MAX_TIMESTAMP
    assert info.status is JobStatus.PENDING
    details = sync.get_job_details(late.job_id, tenant=late_tenant)
    assert details is not None and details.data == {"é": "😀", "k": "\\u0000 is text"}
    assert sync.get_job_status(early.job_id, tenant=early.tenant).run_at == bounds.MIN_TIMESTAMP
    page = sync.list_jobs(
        tenant=late_tenant,
        created_after=bounds.MIN_TIMESTAMP,
        created_before=bounds.MAX_TIMESTAMP,
    )
    assert [j.job_id for j in page.jobs] == [late.job_id]
    assert sync.cancel_job(late.job_id, tenant=late_tenant, reason="r" * 2000, cancelled_by="é")


async def test_wait_for_job_timeout_is_a_job_timeout_error_on_every_runner(
    env: dict[str, Any],
) -> None:
    """Async ``wait_for_job`` used to raise a bare ``TimeoutError('')``; now every runner raises
    ``JobTimeoutError`` (also a ``TimeoutError``) with the sync twin's message."""
    memory = InMemoryJobRunner(registry=_registry())
    postgres = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    try:
        messages = []
        for runner in (memory, postgres):
            job = await runner.schedule_job("ok", {}, tenant=TENANT)  # no worker runs it
            with pytest.raises(JobTimeoutError) as info:
                await runner.wait_for_job(job.job_id, tenant=TENANT, timeout=0.05)
            assert isinstance(info.value, TimeoutError)
            messages.append(str(info.value))
            assert messages[-1] == f"job {job.job_id} was not final within 0.05 s"
            await runner.cancel_job(job.job_id, tenant=TENANT)
        job = await postgres.schedule_job("ok", {}, tenant=TENANT)
        with pytest.raises(JobTimeoutError) as sync_info:
            await asyncio.to_thread(
                env["sync"].wait_for_job, job.job_id, tenant=TENANT, timeout=0.05
            )
        assert str(sync_info.value) == f"job {job.job_id} was not final within 0.05 s"
        await postgres.cancel_job(job.job_id, tenant=TENANT)
    finally:
        await postgres.close()


async def test_bulk_enqueue_over_the_total_limit_writes_nothing(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The total is checked over all payloads before any is written (the real limit, 256 MiB,
    is lowered here so the test does not build a quarter of a gigabyte)."""
    monkeypatch.setattr(checks, "MAX_BULK_PAYLOAD_BYTES", 10_000)  # the name the check reads
    items = [{"x": "a" * 900} for _ in range(12)]  # each ~910 bytes, ~11 KB in all
    postgres = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    memory = InMemoryJobRunner(registry=_registry())
    try:
        with writes_nothing(env):
            with pytest.raises(InvalidArgumentError, match="bulk enqueue exceed"):
                await postgres.schedule_jobs("ok", items, tenant=TENANT)
            with pytest.raises(InvalidArgumentError, match="bulk enqueue exceed"):
                env["sync"].schedule_jobs("ok", items, tenant=TENANT)
            with psycopg.connect(env["dsn"]) as conn:
                with pytest.raises(InvalidArgumentError, match="bulk enqueue exceed"):
                    env["sync"].schedule_jobs("ok", items, tenant=TENANT, connection=conn)
                conn.commit()
        with pytest.raises(InvalidArgumentError, match="bulk enqueue exceed"):
            await memory.schedule_jobs("ok", items, tenant=TENANT)
        assert (await memory.list_jobs(tenant=ALL_TENANTS)).jobs == []
        # Under the total, the same payloads go through.
        handles = await memory.schedule_jobs("ok", items[:10], tenant=TENANT)
        assert len(handles) == 10
    finally:
        await postgres.close()


# -- a caller's transaction stays usable -------------------------------------------------------
_REFUSING_TRIGGER = sql.SQL("""
CREATE FUNCTION {schema}.refuse_db_refuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type = 'db-refuses' THEN
        RAISE EXCEPTION 'refused by a database-side check';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_db_refuses BEFORE INSERT ON {schema}.jobs
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_db_refuses();
""")


@pytest.fixture
def refusing_schema(jobrunner_dsn: str) -> Iterator[dict[str, Any]]:
    """A schema whose jobs table refuses the job name ``db-refuses`` in a trigger (a check
    only the database makes), and a table of the caller's own."""
    schema = f"jrt_refuse_{uuid.uuid4().hex[:10]}"
    asyncio.run(Database(jobrunner_dsn, schema=schema).migrate())
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(_REFUSING_TRIGGER.format(schema=sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.orders (n int)").format(sql.Identifier(schema)))
    registry = _registry()
    registry.add("db-refuses", _handler)
    try:
        yield {"dsn": jobrunner_dsn, "schema": schema, "registry": registry}
    finally:
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _count(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_refused_enqueue_leaves_the_callers_sync_transaction_usable(
    refusing_schema: dict[str, Any],
) -> None:
    """Refused by validation (before any SQL) or by the database (rolled back to a savepoint):
    either way the caller's transaction goes on and commits its own work and its good jobs."""
    env = refusing_schema
    orders = sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(env["schema"], "orders"))
    runner = SyncJobRunner(
        PostgresJobRunner(env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2)
    )
    try:
        for autocommit in (False, True):
            with psycopg.connect(env["dsn"], autocommit=autocommit) as conn:
                with conn.transaction() if autocommit else contextlib.nullcontext():
                    conn.execute(orders, (1,))
                    with pytest.raises(InvalidArgumentError):
                        runner.schedule_job("ok", {"x": LONE}, connection=conn)
                    with pytest.raises(InvalidArgumentError):
                        runner.schedule_job_at("ok", {}, BEFORE_YEAR_1, connection=conn)
                    with pytest.raises(InvalidArgumentError):
                        runner.schedule_jobs("ok", [{}, {NUL: 1}], connection=conn)
                    with pytest.raises(DatabaseError, match="database-side check"):
                        runner.schedule_job("db-refuses", {}, connection=conn)
                    with pytest.raises(DatabaseError, match="database-side check"):
                        runner.schedule_jobs("db-refuses", [{}, {}], connection=conn)
                    conn.execute(orders, (2,))  # the transaction is not aborted
                    good = runner.schedule_job("ok", {"n": 1}, connection=conn)
                    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
                if not autocommit:
                    conn.commit()
            assert runner.get_job_status(good.job_id) is not None
        # Outside any transaction block (autocommit): nothing to protect, nothing left over.
        with psycopg.connect(env["dsn"], autocommit=True) as conn:
            with pytest.raises(DatabaseError, match="database-side check"):
                runner.schedule_job("db-refuses", {}, connection=conn)
            conn.execute(orders, (3,))
        assert _count(env["dsn"], env["schema"], "orders") == 5
        assert _count(env["dsn"], env["schema"], "jobs") == 2
    finally:
        runner.close()


async def test_refused_enqueue_leaves_the_callers_async_transaction_usable(
    refusing_schema: dict[str, Any],
) -> None:
    env = refusing_schema
    orders = sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(env["schema"], "orders"))
    runner = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    try:
        async with await psycopg.AsyncConnection.connect(env["dsn"]) as conn:
            await conn.execute(orders, (1,))
            with pytest.raises(InvalidArgumentError):
                await runner.schedule_job("ok", {LONE: 1}, connection=conn)
            with pytest.raises(InvalidArgumentError):
                await runner.schedule_job("ok", {}, singleton_key=NUL, connection=conn)
            with pytest.raises(DatabaseError, match="database-side check"):
                await runner.schedule_job("db-refuses", {}, connection=conn)
            with pytest.raises(DatabaseError, match="database-side check"):
                await runner.schedule_jobs("db-refuses", [{}], connection=conn)
            await conn.execute(orders, (2,))
            good = await runner.schedule_jobs("ok", [{}, {}], connection=conn)
            await conn.commit()
        assert _count(env["dsn"], env["schema"], "orders") == 2
        assert _count(env["dsn"], env["schema"], "jobs") == 2
        assert await runner.get_job_status(good[0].job_id) is not None
    finally:
        await runner.close()


# -- rows holding extreme timestamps (hand-written SQL) never break a listing ------------------
EXTREME_ROWS = [
    # (status, created_at, run_at, started_at, completed_at) as PostgreSQL text
    ("queued", "infinity", "-infinity", None, None),
    ("completed", "0044-03-15 BC", "infinity", "-infinity", "infinity"),
    ("failed", "12000-01-01", "0001-01-01 00:00+05", "20000-01-01", "20000-01-02"),
    ("pending", "-infinity", "294276-12-31", None, None),
    ("cancelled", "0001-01-01 00:00:00", "4713-11-25 BC", None, "9999-12-31 23:59:59.999999"),
]


@pytest.fixture
def extreme_env(jobrunner_dsn: str) -> Iterator[dict[str, Any]]:
    """A schema with a normal job and one job per row of EXTREME_ROWS, written by SQL."""
    schema = f"jrt_extreme_{uuid.uuid4().hex[:10]}"
    registry = _registry()
    asyncio.run(Database(jobrunner_dsn, schema=schema).migrate())
    sync = SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2)
    )
    normal = sync.schedule_job("ok", {"n": 0}, tenant=TENANT).job_id
    ids = [sync.schedule_job("ok", {"n": i}, tenant=TENANT).job_id for i in range(5)]
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for job_id, (status, created, run_at, started, completed) in zip(
            ids, EXTREME_ROWS, strict=True
        ):
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = %s::{}, created_at = %s::timestamp, "
                    "updated_at = %s::timestamp, run_at = %s::timestamptz, "
                    "started_at = %s::timestamptz, completed_at = %s::timestamptz "
                    "WHERE job_id = %s"
                ).format(sql.Identifier(schema, "jobs"), sql.Identifier(schema, "job_status")),
                (status, created, created, run_at, started, completed, job_id),
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (tenant, job_id, step_name, status, processed_at) "
                    "VALUES (%s, %s, 'attempt', %s::{}, %s::timestamp)"
                ).format(
                    sql.Identifier(schema, "job_details"), sql.Identifier(schema, "job_status")
                ),
                (TENANT, job_id, status, created),
            )
    try:
        yield {
            "dsn": jobrunner_dsn,
            "schema": schema,
            "registry": registry,
            "sync": sync,
            "normal": normal,
            "ids": ids,
        }
    finally:
        sync.close()
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def test_extreme_rows_never_break_the_api(extreme_env: dict[str, Any]) -> None:
    env = extreme_env
    runner = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    everyone = {env["normal"], *env["ids"]}
    try:
        for tenant in (TENANT, ALL_TENANTS):
            page = await runner.list_jobs(tenant=tenant, limit=500)
            assert {j.job_id for j in page.jobs} == everyone
            # Keyset pages, two rows each, list every job exactly once.
            seen: list[uuid.UUID] = []
            cursor = None
            while True:
                page = await runner.list_jobs(tenant=tenant, limit=2, cursor=cursor)
                seen += [j.job_id for j in page.jobs]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert sorted(seen) == sorted(everyone)
        # Out-of-range values load clamped (documented), others exactly.
        infinite = await runner.get_job_status(env["ids"][0], tenant=TENANT)
        assert infinite is not None
        assert infinite.created_at == DT_MAX and infinite.run_at == DT_MIN
        bc = await runner.get_job_details(env["ids"][1], tenant=TENANT)
        assert bc is not None and bc.job.created_at == DT_MIN
        assert bc.job.started_at == DT_MIN and bc.job.completed_at == DT_MAX
        assert bc.steps and bc.steps[0].processed_at == DT_MIN
        last = await runner.get_job_status(env["ids"][4], tenant=TENANT)
        assert last is not None
        assert last.completed_at == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
        for job_id in env["ids"]:
            assert await runner.get_job_details(job_id, tenant=TENANT) is not None
        metrics = await runner.get_metrics(tenant=TENANT)
        assert metrics.total == 6
        json.dumps(metrics.oldest_queued_age_seconds, allow_nan=False)
        await runner.get_metrics(tenant=ALL_TENANTS)
        assert await runner.list_schedules(tenant=TENANT) == []
        assert await runner.clear_history(tenant=TENANT, older_than=timedelta(days=1)) >= 0
    finally:
        await runner.close()


def test_extreme_rows_never_break_the_cli(
    extreme_env: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = extreme_env
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", env["dsn"])
    monkeypatch.setenv("JOBRUNNER_SCHEMA", env["schema"])
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    for argv in (
        ["jobs", "list", "--tenant", str(TENANT)],
        ["jobs", "list", "--all-tenants", "--json"],
        ["jobs", "list", "--all-tenants", "--limit", "2"],
        ["jobs", "list", "--tenant", str(TENANT), "--since", "0001-01-02"],
        ["metrics", "--all-tenants"],
        *(["jobs", "show", str(job_id), "--tenant", str(TENANT)] for job_id in env["ids"]),
    ):
        assert cli_main(argv) == 0, (argv, capsys.readouterr().err)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
    assert cli_main(["jobs", "list", "--tenant", str(TENANT)]) == 0
    out = capsys.readouterr().out
    assert "9999-12-31 23:59:59" in out and "0001-01-01 00:00:00" in out


async def test_extreme_rows_never_break_the_dashboard(extreme_env: dict[str, Any]) -> None:
    from jobrunner.dashboard import create_app

    env = extreme_env
    runner = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    try:
        transport = httpx.ASGITransport(app=create_app(runner))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            paths = [
                "/",
                "/jobs",
                "/jobs?limit=10",
                f"/jobs?tenant={TENANT}&from=0001-01-02&to=9999-12-29",
                "/api/jobs",
                "/api/metrics",
                "/history",
            ]
            for job_id in env["ids"]:
                paths += [f"/jobs/{TENANT}/{job_id}", f"/api/jobs/{TENANT}/{job_id}"]
            for path in paths:
                response = await client.get(path)
                assert response.status_code == 200, (path, response.text[:300])
            listed = (await client.get("/api/jobs")).json()["jobs"]
            assert {j["job_id"] for j in listed} == {str(i) for i in {env["normal"], *env["ids"]}}
    finally:
        await runner.close()


@contextlib.asynccontextmanager
async def _memory_with_job() -> AsyncIterator[tuple[InMemoryJobRunner, uuid.UUID]]:
    runner = InMemoryJobRunner(registry=_registry())
    job = await runner.schedule_job("ok", {}, tenant=TENANT)
    yield runner, job.job_id


async def test_memory_runner_accepts_the_same_bounds() -> None:
    """What PostgreSQL accepts at the edges, the in-memory runner accepts too."""
    async with _memory_with_job() as (runner, job_id):
        late = await runner.schedule_job_at("ok", {"é": "😀"}, bounds.MAX_TIMESTAMP)
        info = await runner.get_job_status(late.job_id)
        assert info is not None and info.status is JobStatus.PENDING
        assert await runner.cancel_job(job_id, tenant=TENANT, reason="r" * 2000)
        assert await runner.clear_history(older_than=bounds.MAX_HISTORY_AGE_SECONDS) == 0


async def test_dashboard_display_parameters_are_normalised_never_a_500(
    env: dict[str, Any],
) -> None:
    """``page``, ``limit`` and ``removed`` only shape the display: anything but a plain number
    falls back to the default (``"²"`` passed ``str.isdigit`` and crashed ``int`` with a 500)."""
    from jobrunner.dashboard import create_app

    runner = PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )
    try:
        transport = httpx.ASGITransport(app=create_app(runner))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            with writes_nothing(env):
                for path in (
                    "/jobs?page=%C2%B2",
                    "/jobs?limit=%C2%B2&page=-1",
                    "/api/jobs?limit=%D9%A3",  # ARABIC-INDIC DIGIT THREE
                    "/api/jobs?limit=99999999999999999999",
                    "/history?removed=%C2%B2",
                    "/history?removed=" + "9" * 40,
                ):
                    response = await client.get(path)
                    assert response.status_code == 200, (path, response.text[:300])
    finally:
        await runner.close()


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"concurrency": 10**9},
        {"sync_threads": 10**9},
        {"shutdown_grace": -1},
        {"shutdown_grace": 1e20},
        {"heartbeat_interval": 0},
        {"heartbeat_interval": float("nan")},
        {"queues": "default"},
        {"queues": ["bad\x00queue"]},
    ],
    ids=repr,
)
def test_temporal_worker_options_have_the_documented_bounds(options: dict[str, Any]) -> None:
    from jobrunner.backends.temporal import TemporalWorkerSettings

    with pytest.raises(InvalidArgumentError):
        TemporalWorkerSettings.build(**options)
