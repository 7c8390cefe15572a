"""Hostile and malformed input at every public boundary: the runner (async and its sync twin),
the CLI and the dashboard. Every case must get a clear typed error (``JobRunnerError``
subclass; ``TypeError`` for an unknown keyword, exactly as Python reports it for the keyword-only
signatures), exit code 2 with a message, or an HTTP 4xx, and must write nothing: every table of
the schema is fingerprinted before and after.

Adding a case is one line in a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from jobrunner import (
    HandlerNotFoundError,
    InvalidArgumentError,
    JobHandlerRegistry,
    JobRunnerError,
    ScheduleError,
    SyncJobRunner,
)
from jobrunner._db._database import Database
from jobrunner._limits import MAX_PAYLOAD_BYTES
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main as cli_main

SQLI = "x'); DROP TABLE jobs; --"
NAIVE = datetime(2030, 1, 1, 12, 0)
AWARE = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
BIG = "a" * MAX_PAYLOAD_BYTES
TENANT = uuid.UUID("0badf00d-0000-4000-8000-000000000001")
Unknown = (TypeError, InvalidArgumentError)

# (case id, method, positional args, keyword args, expected exception)
API_CASES: list[tuple[str, str, tuple[Any, ...], dict[str, Any], Any]] = [
    # names
    ("name-int", "schedule_job", (123,), {}, InvalidArgumentError),
    ("name-empty", "schedule_job", ("",), {}, InvalidArgumentError),
    ("name-too-long", "schedule_job", ("x" * 201,), {}, InvalidArgumentError),
    ("name-nul", "schedule_job", ("bad\x00name",), {}, InvalidArgumentError),
    ("name-newline", "schedule_job", ("bad\nname",), {}, InvalidArgumentError),
    ("name-sql", "schedule_job", (SQLI,), {}, HandlerNotFoundError),
    # payloads
    ("data-str", "schedule_job", ("ok", "not a mapping"), {}, InvalidArgumentError),
    ("data-list", "schedule_job", ("ok", [1, 2]), {}, InvalidArgumentError),
    ("data-nan", "schedule_job", ("ok", {"x": math.nan}), {}, InvalidArgumentError),
    ("data-inf", "schedule_job", ("ok", {"x": math.inf}), {}, InvalidArgumentError),
    ("data-object", "schedule_job", ("ok", {"x": object()}), {}, InvalidArgumentError),
    ("data-bytes", "schedule_job", ("ok", {"x": b"raw"}), {}, InvalidArgumentError),
    ("data-datetime", "schedule_job", ("ok", {"x": AWARE}), {}, InvalidArgumentError),
    ("data-set", "schedule_job", ("ok", {"x": {1, 2}}), {}, InvalidArgumentError),
    ("data-tuple-key", "schedule_job", ("ok", {(1, 2): "x"}), {}, InvalidArgumentError),
    ("data-nul", "schedule_job", ("ok", {"x": "a\x00b"}), {}, InvalidArgumentError),
    ("data-oversized", "schedule_job", ("ok", {"x": BIG}), {}, InvalidArgumentError),
    ("metadata-str", "schedule_job", ("ok", {}), {"metadata": "m"}, InvalidArgumentError),
    (
        "metadata-nan",
        "schedule_job",
        ("ok", {}),
        {"metadata": {"m": math.nan}},
        InvalidArgumentError,
    ),
    (
        "metadata-oversized",
        "schedule_job",
        ("ok", {}),
        {"metadata": {"m": BIG}},
        InvalidArgumentError,
    ),
    # options
    ("tenant-garbage", "schedule_job", ("ok",), {"tenant": "not-a-uuid"}, InvalidArgumentError),
    ("tenant-int", "schedule_job", ("ok",), {"tenant": 42}, InvalidArgumentError),
    ("tenant-sql", "schedule_job", ("ok",), {"tenant": SQLI}, InvalidArgumentError),
    ("priority-str", "schedule_job", ("ok",), {"priority": "high"}, InvalidArgumentError),
    ("priority-huge", "schedule_job", ("ok",), {"priority": 10**6}, InvalidArgumentError),
    ("priority-bool", "schedule_job", ("ok",), {"priority": True}, InvalidArgumentError),
    ("priority-float", "schedule_job", ("ok",), {"priority": 1.5}, InvalidArgumentError),
    ("singleton-int", "schedule_job", ("ok",), {"singleton_key": 5}, InvalidArgumentError),
    ("singleton-empty", "schedule_job", ("ok",), {"singleton_key": ""}, InvalidArgumentError),
    ("user-garbage", "schedule_job", ("ok",), {"user_id": "nobody"}, InvalidArgumentError),
    ("queue-empty", "schedule_job", ("ok",), {"queue": ""}, InvalidArgumentError),
    ("queue-int", "schedule_job", ("ok",), {"queue": 7}, InvalidArgumentError),
    ("queue-long", "schedule_job", ("ok",), {"queue": "q" * 501}, InvalidArgumentError),
    ("connection-str", "schedule_job", ("ok",), {"connection": "dsn"}, InvalidArgumentError),
    ("unknown-option", "schedule_job", ("ok",), {"bogus": 1}, Unknown),
    # run_at
    ("run-at-naive", "schedule_job_at", ("ok", {}, NAIVE), {}, InvalidArgumentError),
    ("run-at-str", "schedule_job_at", ("ok", {}, "2030-01-01"), {}, InvalidArgumentError),
    ("run-at-none", "schedule_job_at", ("ok", {}, None), {}, InvalidArgumentError),
    ("run-at-epoch", "schedule_job_at", ("ok", {}, 1_900_000_000), {}, InvalidArgumentError),
    # bulk: one bad item and nothing of the batch is written
    ("bulk-str", "schedule_jobs", ("ok", "abc"), {}, InvalidArgumentError),
    ("bulk-mapping", "schedule_jobs", ("ok", {"a": 1}), {}, InvalidArgumentError),
    ("bulk-int", "schedule_jobs", ("ok", 5), {}, InvalidArgumentError),
    ("bulk-one-bad", "schedule_jobs", ("ok", [{"a": 1}, "x"]), {}, InvalidArgumentError),
    (
        "bulk-one-nan",
        "schedule_jobs",
        ("ok", [{"a": 1}, {"b": math.nan}]),
        {},
        InvalidArgumentError,
    ),
    ("bulk-one-big", "schedule_jobs", ("ok", [{"a": 1}, {"b": BIG}]), {}, InvalidArgumentError),
    ("bulk-naive", "schedule_jobs", ("ok", [{}]), {"run_at": NAIVE}, InvalidArgumentError),
    ("bulk-sql-name", "schedule_jobs", (SQLI, [{}]), {}, HandlerNotFoundError),
    # recurring
    ("cron-garbage", "schedule_recurring_job", ("ok", {}, "not a cron"), {}, ScheduleError),
    ("cron-3-fields", "schedule_recurring_job", ("ok", {}, "* * *"), {}, ScheduleError),
    ("cron-minute-61", "schedule_recurring_job", ("ok", {}, "61 * * * *"), {}, ScheduleError),
    ("cron-empty", "schedule_recurring_job", ("ok", {}, ""), {}, ScheduleError),
    ("cron-sql", "schedule_recurring_job", ("ok", {}, SQLI), {}, ScheduleError),
    ("interval-zero", "schedule_recurring_job", ("ok", {}, "0 seconds"), {}, ScheduleError),
    ("interval-negative", "schedule_recurring_job", ("ok", {}, "-5 minutes"), {}, ScheduleError),
    ("interval-unit", "schedule_recurring_job", ("ok", {}, "5 fortnights"), {}, ScheduleError),
    ("cron-int", "schedule_recurring_job", ("ok", {}, 5), {}, InvalidArgumentError),
    (
        "timezone",
        "schedule_recurring_job",
        ("ok", {}, "@hourly"),
        {"timezone": "Mars/Olympus"},
        InvalidArgumentError,
    ),
    (
        "missed-ticks",
        "schedule_recurring_job",
        ("ok", {}, "@hourly"),
        {"missed_ticks": "bogus"},
        InvalidArgumentError,
    ),
    (
        "overlap",
        "schedule_recurring_job",
        ("ok", {}, "@hourly"),
        {"overlap": "bogus"},
        InvalidArgumentError,
    ),
    (
        "catch-up-negative",
        "schedule_recurring_job",
        ("ok", {}, "@hourly"),
        {"max_catch_up": -1},
        InvalidArgumentError,
    ),
    (
        "recurring-nan",
        "schedule_recurring_job",
        ("ok", {"x": math.nan}, "@hourly"),
        {},
        InvalidArgumentError,
    ),
    (
        "recurring-sql-name",
        "schedule_recurring_job",
        (SQLI, {}, "@hourly"),
        {},
        HandlerNotFoundError,
    ),
    ("recurring-unknown", "schedule_recurring_job", ("ok", {}, "@hourly"), {"bogus": 1}, Unknown),
    ("schedules-tenant", "list_schedules", (), {"tenant": "nope"}, InvalidArgumentError),
    ("pause-uuid", "pause_schedule", ("nope",), {}, InvalidArgumentError),
    ("resume-uuid", "resume_schedule", (SQLI,), {}, InvalidArgumentError),
    # ids
    ("status-uuid", "get_job_status", ("not-a-uuid",), {}, InvalidArgumentError),
    ("status-int", "get_job_status", (123,), {}, InvalidArgumentError),
    ("status-none", "get_job_status", (None,), {}, InvalidArgumentError),
    ("status-sql", "get_job_status", (SQLI,), {}, InvalidArgumentError),
    (
        "status-tenant",
        "get_job_status",
        (str(uuid.uuid4()),),
        {"tenant": "t"},
        InvalidArgumentError,
    ),
    ("cancel-uuid", "cancel_job", ("nope",), {}, InvalidArgumentError),
    ("cancel-reason", "cancel_job", (str(uuid.uuid4()),), {"reason": 5}, InvalidArgumentError),
    ("cancel-by", "cancel_job", (str(uuid.uuid4()),), {"cancelled_by": 5}, InvalidArgumentError),
    ("cancel-unknown", "cancel_job", (str(uuid.uuid4()),), {"force": True}, Unknown),
    ("retry-uuid", "retry_job", (SQLI,), {}, InvalidArgumentError),
    ("details-uuid", "get_job_details", ("nope",), {}, InvalidArgumentError),
    ("wait-uuid", "wait_for_job", ("nope",), {"timeout": 1}, InvalidArgumentError),
    # listing and monitoring filters
    ("list-limit-negative", "list_jobs", (), {"limit": -1}, InvalidArgumentError),
    ("list-limit-huge", "list_jobs", (), {"limit": 10**9}, InvalidArgumentError),
    ("list-limit-str", "list_jobs", (), {"limit": "ten"}, InvalidArgumentError),
    ("list-status", "list_jobs", (), {"status": "bogus"}, InvalidArgumentError),
    ("list-status-sql", "list_jobs", (), {"status": SQLI}, InvalidArgumentError),
    ("list-cursor", "list_jobs", (), {"cursor": "garbage"}, InvalidArgumentError),
    ("list-cursor-sql", "list_jobs", (), {"cursor": SQLI}, InvalidArgumentError),
    ("list-after-naive", "list_jobs", (), {"created_after": NAIVE}, InvalidArgumentError),
    ("list-after-str", "list_jobs", (), {"created_after": "yesterday"}, InvalidArgumentError),
    ("list-tenant", "list_jobs", (), {"tenant": "nope"}, InvalidArgumentError),
    ("list-before-naive", "list_jobs", (), {"created_before": NAIVE}, InvalidArgumentError),
    ("list-search-huge", "list_jobs", (), {"search": "x" * 100_000}, InvalidArgumentError),
    ("list-name-int", "list_jobs", (), {"name": 5}, InvalidArgumentError),
    ("list-unknown", "list_jobs", (), {"order_by": "1; DROP TABLE jobs"}, Unknown),
    ("metrics-tenant", "get_metrics", (), {"tenant": SQLI}, InvalidArgumentError),
    ("clear-scope", "clear_history", (), {"scope": "everything"}, InvalidArgumentError),
    ("clear-negative", "clear_history", (), {"older_than": -1}, InvalidArgumentError),
    ("clear-str", "clear_history", (), {"older_than": "1 day"}, InvalidArgumentError),
    ("clear-nan", "clear_history", (), {"older_than": math.nan}, InvalidArgumentError),
    ("clear-tenant", "clear_history", (), {"tenant": "nope"}, InvalidArgumentError),
]

# Worker options (async runner only: the sync twin has no workers).
WORKER_CASES: list[tuple[str, dict[str, Any]]] = [
    ("concurrency-zero", {"concurrency": 0}),
    ("concurrency-negative", {"concurrency": -3}),
    ("concurrency-str", {"concurrency": "ten"}),
    ("queues-str", {"queues": "default"}),
    ("lease-negative", {"lease_seconds": -1}),
    ("poll-zero", {"poll_interval": 0}),
    ("unknown-option", {"bogus": 1}),
]

# (case id, argv) -> exit status 2 with a message on stderr
CLI_CASES: list[tuple[str, list[str]]] = [
    ("unknown-command", ["explode"]),
    ("unknown-flag", ["jobs", "list", "--bogus"]),
    ("migrate-schema", ["migrate", "--schema", "bad;schema"]),
    ("migrate-schema-sql", ["migrate", "--schema", SQLI]),
    ("worker-no-app", ["worker", "--app", "no_such_module_xyz"]),
    ("worker-concurrency", ["worker", "--app", "json", "--concurrency", "0"]),
    ("worker-concurrency-str", ["worker", "--app", "json", "--concurrency", "ten"]),
    ("show-uuid", ["jobs", "show", "not-a-uuid"]),
    ("cancel-sql", ["jobs", "cancel", SQLI]),
    ("retry-int", ["jobs", "retry", "123"]),
    ("list-limit", ["jobs", "list", "--limit", "-5"]),
    ("list-limit-str", ["jobs", "list", "--limit", "ten"]),
    ("list-status", ["jobs", "list", "--status", "bogus"]),
    ("list-cursor", ["jobs", "list", "--cursor", "garbage"]),
    ("list-tenant", ["jobs", "list", "--tenant", SQLI]),
    ("metrics-tenant", ["metrics", "--tenant", "nope"]),
    ("clear-older-than", ["history", "clear", "--older-than", "-1", "--yes"]),
    ("schedules-pause", ["schedules", "pause", "nope"]),
    ("schedules-tenant", ["schedules", "list", "--tenant", "nope"]),
    # Out of the documented bounds (docs/reference/configuration.md, "Limits"): argparse's
    # one-line usage error, never a traceback. Surrogates are what Python makes of undecodable
    # bytes in argv.
    ("list-since-overflow", ["jobs", "list", "--since", "99999999d"]),
    ("list-since-huge-number", ["jobs", "list", "--since", "9" * 30 + "d"]),
    ("list-until-before-year-1", ["jobs", "list", "--until", "0001-01-01T00:00:00+05:00"]),
    ("list-since-year-9999", ["jobs", "list", "--since", "9999-12-31T23:00:00-05:00"]),
    ("list-until-garbage", ["jobs", "list", "--until", "tomorrow"]),
    ("list-search-surrogate", ["jobs", "list", "--search", "\udcff"]),
    ("list-name-surrogate", ["jobs", "list", "--name", "a\udcff"]),
    ("list-search-long", ["jobs", "list", "--search", "s" * 201]),
    ("list-limit-float", ["jobs", "list", "--limit", "1e3"]),
    ("list-limit-huge", ["jobs", "list", "--limit", "501"]),
    ("list-cursor-surrogate", ["jobs", "list", "--cursor", "\udcff"]),
    ("list-database-url-surrogate", ["jobs", "list", "--database-url", "postgresql://\udcff"]),
    ("show-surrogate", ["jobs", "show", "\udcff"]),
    ("cancel-reason-surrogate", ["jobs", "cancel", str(uuid.UUID(int=1)), "--reason", "\udcff"]),
    ("cancel-reason-long", ["jobs", "cancel", str(uuid.UUID(int=1)), "--reason", "r" * 2001]),
    ("clear-days-1e10", ["history", "clear", "--older-than-days", "1e10", "--yes"]),
    ("clear-days-inf", ["history", "clear", "--older-than-days", "inf", "--yes"]),
    ("clear-days-nan", ["history", "clear", "--older-than-days", "nan", "--yes"]),
    ("clear-days-text", ["history", "clear", "--older-than-days", "ten", "--yes"]),
    ("clear-tenant-surrogate", ["history", "clear", "--tenant", "\udcff", "--yes"]),
    ("worker-lease-1e20", ["worker", "--app", "json", "--lease", "1e20"]),
    ("worker-lease-nan", ["worker", "--app", "json", "--lease", "nan"]),
    ("worker-lease-zero", ["worker", "--app", "json", "--lease", "0"]),
    ("worker-grace-inf", ["worker", "--app", "json", "--grace", "inf"]),
    ("worker-grace-negative", ["worker", "--app", "json", "--grace", "-1"]),
    ("worker-concurrency-huge", ["worker", "--app", "json", "--concurrency", "1000000"]),
    ("worker-queues-surrogate", ["worker", "--app", "json", "--queues", "default,\udcff"]),
    ("worker-queues-probe", ["worker", "--app", "json", "--queues", "probe:x"]),
    (
        "schedules-cancel-reason",
        ["schedules", "cancel", str(uuid.UUID(int=1)), "--reason", "\udcff"],
    ),
    ("schedules-resume-surrogate", ["schedules", "resume", "\udcff"]),
    ("tenants-grant-role", ["tenants", "grant", "r\udcff", str(uuid.UUID(int=1))]),
    ("tenants-grant-tenant", ["tenants", "grant", "postgres", "nope"]),
    ("dashboard-port-zero", ["dashboard", "--port", "0"]),
    ("dashboard-port-huge", ["dashboard", "--port", "70000"]),
    ("dashboard-refresh-inf", ["dashboard", "--refresh", "inf"]),
    ("dashboard-refresh-tiny", ["dashboard", "--refresh", "0.01"]),
    ("dashboard-tenant", ["dashboard", "--tenant", "nope"]),
    ("metrics-tenant-surrogate", ["metrics", "--tenant", "\udcff"]),
]

# (case id, method, path, form or None) -> 4xx
HTTP_CASES: list[tuple[str, str, str, dict[str, str] | None]] = [
    ("job-bad-tenant", "GET", "/jobs/not-a-uuid/{job}", None),
    ("job-bad-id", "GET", "/jobs/{tenant}/not-a-uuid", None),
    ("job-sql-id", "GET", "/jobs/{tenant}/1%27%3B%20DROP%20TABLE%20jobs", None),
    ("api-job-bad-id", "GET", "/api/jobs/{tenant}/nope", None),
    ("api-jobs-status", "GET", "/api/jobs?status=bogus", None),
    ("api-jobs-status-sql", "GET", "/api/jobs?status=x%27%3B%20DROP%20TABLE%20jobs", None),
    ("api-jobs-tenant", "GET", "/api/jobs?tenant=nope", None),
    ("api-jobs-date", "GET", "/api/jobs?from=yesterday", None),
    ("api-jobs-cursor", "GET", "/api/jobs?cursor=garbage", None),
    ("action-unknown", "POST", "/jobs/{tenant}/{job}/explode", {}),
    ("action-no-csrf", "POST", "/jobs/{tenant}/{job}/cancel", {}),
    ("clear-no-csrf", "POST", "/history/clear", {"scope": "all"}),
    ("unknown-page", "GET", "/../../etc/passwd", None),
    # Out of the documented bounds: a 4xx, never a 500.
    ("api-jobs-to-9999", "GET", "/api/jobs?to=9999-12-31", None),
    ("jobs-to-9999", "GET", "/jobs?to=9999-12-31", None),
    ("api-jobs-from-year-1", "GET", "/api/jobs?from=0001-01-01", None),
    ("api-jobs-from-after-to-9999", "GET", "/api/jobs?from=2024-01-01&to=9999-12-30", None),
    ("api-jobs-q-nul", "GET", "/api/jobs?q=a%00b", None),
    ("api-jobs-name-nul", "GET", "/api/jobs?name=%00", None),
    ("api-jobs-runner-nul", "GET", "/api/jobs?runner_type=%00", None),
    ("api-jobs-q-long", "GET", "/api/jobs?q=" + "x" * 201, None),
    ("api-jobs-cursor-surrogate", "GET", "/api/jobs?cursor=%ED%A0%80", None),
    ("jobs-cursor-nul", "GET", "/jobs?cursor=%00", None),
    ("api-job-surrogate-id", "GET", "/api/jobs/{tenant}/%ED%A0%80", None),
    ("job-nul-tenant", "GET", "/jobs/%00/{job}", None),
]


def _handler(ctx: Any, data: dict[str, Any]) -> None:
    return None


@pytest.fixture(scope="module")
def hostile_env(jobrunner_dsn: str) -> Iterator[dict[str, Any]]:
    """One schema for the module, holding one queued job of ours, and both twins."""
    schema = f"jrt_hostile_{uuid.uuid4().hex[:10]}"
    registry = JobHandlerRegistry()
    registry.add("ok", _handler)
    asyncio.run(Database(jobrunner_dsn, schema=schema).migrate())
    sync = SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=2)
    )
    job = sync.schedule_job("ok", {"n": 1}, tenant=TENANT)
    try:
        yield {
            "dsn": jobrunner_dsn,
            "schema": schema,
            "registry": registry,
            "sync": sync,
            "job": job.job_id,
        }
    finally:
        sync.close()
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def fingerprint(env: dict[str, Any]) -> dict[str, str]:
    """A hash of every row of every table in the schema (and that the tables still exist)."""
    with psycopg.connect(env["dsn"], autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY 1",
                (env["schema"],),
            ).fetchall()
        ]
        prints = {}
        for table in tables:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, ',' ORDER BY "
                    "t::text), '')) FROM {}.{} t"
                ).format(sql.Identifier(env["schema"]), sql.Identifier(table))
            ).fetchone()
            prints[table] = str(row[0]) if row else ""
    assert "jobs" in prints and "job_details" in prints
    return prints


@contextlib.contextmanager
def writes_nothing(env: dict[str, Any]) -> Iterator[None]:
    before = fingerprint(env)
    yield
    assert fingerprint(env) == before, "a rejected call wrote to the database"


def _check_error(exc: BaseException, expected: Any) -> None:
    assert isinstance(exc, expected), f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, TypeError):
        assert isinstance(exc, JobRunnerError)
    assert str(exc).strip(), "the error has no message"


@pytest.mark.parametrize(
    ("case", "method", "args", "kwargs", "expected"), API_CASES, ids=[c[0] for c in API_CASES]
)
async def test_async_runner_rejects(
    hostile_env: dict[str, Any],
    case: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    expected: Any,
) -> None:
    runner = _runner(hostile_env)
    try:
        with writes_nothing(hostile_env):
            with pytest.raises(BaseException) as info:
                await getattr(runner, method)(*args, **kwargs)
            _check_error(info.value, expected)
    finally:
        await runner.close()


@pytest.mark.parametrize(
    ("case", "method", "args", "kwargs", "expected"), API_CASES, ids=[c[0] for c in API_CASES]
)
def test_sync_twin_rejects(
    hostile_env: dict[str, Any],
    case: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    expected: Any,
) -> None:
    with writes_nothing(hostile_env):
        with pytest.raises(BaseException) as info:
            getattr(hostile_env["sync"], method)(*args, **kwargs)
        _check_error(info.value, expected)


def _runner(env: dict[str, Any]) -> PostgresJobRunner:
    """A runner on the hostile test's schema (the dashboard tests' own)."""
    return PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"], pool_size=2
    )


@contextlib.asynccontextmanager
async def _dashboard(env: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on a dashboard over a runner of the test's schema, closed after."""
    from jobrunner.dashboard import create_app

    runner = _runner(env)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runner)), base_url="http://dash.test"
        ) as client:
            yield client
    finally:
        await runner.close()


@pytest.mark.parametrize(("case", "kwargs"), WORKER_CASES, ids=[c[0] for c in WORKER_CASES])
async def test_create_worker_rejects(
    hostile_env: dict[str, Any], case: str, kwargs: dict[str, Any]
) -> None:
    runner = _runner(hostile_env)
    with pytest.raises(InvalidArgumentError) as info:
        runner.create_worker(**kwargs)
    assert str(info.value)


def test_transactional_enqueue_with_hostile_input_writes_nothing(
    hostile_env: dict[str, Any],
) -> None:
    """The caller's own transaction: a rejected job adds nothing to it."""
    sync = hostile_env["sync"]
    with writes_nothing(hostile_env), psycopg.connect(hostile_env["dsn"]) as conn:
        for bad in ({"x": math.nan}, {"x": BIG}, "str"):
            with pytest.raises(InvalidArgumentError):
                sync.schedule_job("ok", bad, connection=conn)
        with pytest.raises(InvalidArgumentError):
            sync.schedule_job_at("ok", {}, NAIVE, connection=conn)
        with pytest.raises(Unknown):
            sync.schedule_job("ok", {}, connection=conn, bogus=1)
        conn.commit()


async def test_sql_looking_strings_are_plain_data(hostile_env: dict[str, Any]) -> None:
    """Filters and names that look like SQL match literally (nothing, here) and harm nothing."""
    runner = _runner(hostile_env)
    try:
        with writes_nothing(hostile_env):
            for name in (SQLI, "' OR '1'='1", "%", "_"):
                page = await runner.list_jobs(tenant=TENANT, name=name)
                assert page.jobs == []
            for text in ("' OR 1=1 --", SQLI, "%' OR '%'='"):
                page = await runner.list_jobs(tenant=TENANT, search=text)
                assert page.jobs == []
            assert await runner.get_job_status(hostile_env["job"], tenant=uuid.uuid4()) is None
        # Accepted as data when the runner does not insist on a registered name: stored verbatim.
        loose = PostgresJobRunner(
            hostile_env["dsn"], schema=hostile_env["schema"], require_registered=False, pool_size=2
        )
        try:
            job = await loose.schedule_job(
                SQLI,
                {"q": "'; DROP TABLE jobs; --"},
                tenant=TENANT,
                singleton_key=SQLI,
                queue="q'; --",
            )
            info = await loose.get_job_status(job.job_id, tenant=TENANT)
            assert info is not None and info.name == SQLI
            assert await loose.cancel_job(job.job_id, tenant=TENANT)
        finally:
            await loose.close()
        fingerprint(hostile_env)  # the tables are all still there
    finally:
        await runner.close()


@pytest.mark.parametrize(("case", "argv"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_rejects(
    hostile_env: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    argv: list[str],
) -> None:
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", hostile_env["dsn"])
    monkeypatch.setenv("JOBRUNNER_SCHEMA", hostile_env["schema"])
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with writes_nothing(hostile_env):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}; stderr: {err}"
    assert err.strip(), "no message on stderr"
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("case", "method", "path", "form"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES]
)
async def test_dashboard_rejects(
    hostile_env: dict[str, Any],
    case: str,
    method: str,
    path: str,
    form: dict[str, str] | None,
) -> None:

    url = path.format(tenant=TENANT, job=hostile_env["job"])
    async with _dashboard(hostile_env) as client:
        with writes_nothing(hostile_env):
            response = await client.request(method, url, data=form)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text


# Posted with a valid CSRF token (taken from the history page): the fields themselves are bad.
HISTORY_FORMS: list[tuple[str, dict[str, str]]] = [
    ("scope-unknown", {"scope": "everything"}),
    ("scope-sql", {"scope": SQLI}),
    ("days-negative", {"scope": "all", "older_than_days": "-1"}),
    ("days-text", {"scope": "all", "older_than_days": "ten"}),
    ("days-huge", {"scope": "all", "older_than_days": "9" * 40}),
    ("days-sql", {"scope": "finished", "older_than_days": SQLI}),
    ("days-superscript", {"scope": "all", "older_than_days": "²"}),
    ("days-over-bound", {"scope": "all", "older_than_days": "36501"}),
    ("days-float", {"scope": "all", "older_than_days": "1e10"}),
    ("tenant-nul", {"scope": "all", "tenant": "\x00"}),
    ("tenant-not-utf8", {"scope": "all", "tenant": "\ufffd"}),
]


@pytest.mark.parametrize(("case", "form"), HISTORY_FORMS, ids=[c[0] for c in HISTORY_FORMS])
async def test_dashboard_history_form_rejects_bad_fields(
    hostile_env: dict[str, Any], case: str, form: dict[str, str]
) -> None:
    import re

    async with _dashboard(hostile_env) as client:
        page = await client.get("/history")
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert token, "no CSRF token on the history page"
        with writes_nothing(hostile_env):
            response = await client.post(
                "/history/clear", data={**form, "csrf_token": token.group(1)}
            )
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
