"""Bad input at the API boundary: a typed JobRunnerError and nothing written to the database.

Unknown keyword arguments: every runner, async and sync, raises ``UnknownOptionError`` (an
``InvalidArgumentError`` that is also a ``TypeError``) before anything runs."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apps.helpers import count_details, count_jobs
from jobrunner import (
    InvalidArgumentError,
    JobHandlerRegistry,
    JobRunnerError,
)
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.backends.postgres._worker import WorkerSettings

TENANT = uuid.UUID("11111111-1111-1111-1111-111111111111")
LATER = datetime.now(UTC) + timedelta(hours=1)
DEEP: list[Any] = []
for _ in range(5000):
    DEEP = [DEEP]


async def noop(ctx: Any, data: dict[str, Any]) -> None:
    return None


@pytest.fixture
async def ready(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> PostgresJobRunner:
    registry.add("ok", noop)
    return runner


class Opaque:
    pass


BAD_SCHEDULE_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("set payload", {"data": {"s": {1, 2}}}),
    ("object payload", {"data": {"o": Opaque()}}),
    ("bytes payload", {"data": {"b": b"x"}}),
    ("NaN payload", {"data": {"x": math.nan}}),
    ("infinity payload", {"data": {"x": math.inf}}),
    ("list payload", {"data": [1, 2]}),
    ("string payload", {"data": "text"}),
    ("NUL in payload", {"data": {"x": "a\x00b"}}),
    ("huge payload", {"data": {"x": "y" * 1_100_000}}),
    ("non-str key", {"data": {(1, 2): "tuple key"}}),
    ("too deep", {"data": {"x": DEEP}}),
    ("malformed tenant", {"tenant": "not-a-uuid"}),
    ("int tenant", {"tenant": 42}),
    ("truncated tenant", {"tenant": str(TENANT)[:-1]}),
    ("priority too high", {"priority": 40000}),
    ("priority too low", {"priority": -40000}),
    ("priority float", {"priority": 1.5}),
    ("priority bool", {"priority": True}),
    ("empty singleton", {"singleton_key": ""}),
    ("non-str singleton", {"singleton_key": 5}),
    ("bad user_id", {"user_id": "someone"}),
    ("metadata NaN", {"metadata": {"x": math.nan}}),
    ("metadata list", {"metadata": ["a"]}),
    ("empty queue", {"queue": ""}),
    ("queue with newline", {"queue": "a\nb"}),
    ("reserved queue prefix", {"queue": "probe:x"}),
    ("bad name", {"name": ""}),
    ("non-str name", {"name": 7}),
    ("connection of wrong type", {"connection": "postgresql://x"}),
]


async def test_bad_schedule_calls_write_nothing(ready: PostgresJobRunner) -> None:
    """Every case in one schema (a schema per case would cost a migration each)."""
    for label, case in BAD_SCHEDULE_CALLS:
        kwargs = dict(case)
        name = kwargs.pop("name", "ok")
        data = kwargs.pop("data", {"fine": True})
        await rejected(ready.schedule_job(name, data, **kwargs), f"schedule_job: {label}")
        await rejected(
            ready.schedule_job_at(name, data, LATER, **kwargs), f"schedule_job_at: {label}"
        )
        assert await count_jobs(ready) == 0, label


async def rejected(call: Any, label: str) -> None:
    """Await ``call``; it must raise InvalidArgumentError."""
    try:
        await call
    except InvalidArgumentError:
        return
    pytest.fail(f"accepted {label}")


@pytest.mark.parametrize(
    "run_at",
    [datetime.now() + timedelta(hours=1), "2030-01-01T00:00:00Z", 1700000000, None],
    ids=["naive", "string", "epoch", "none"],
)
async def test_bad_run_at(ready: PostgresJobRunner, run_at: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="run_at"):
        await ready.schedule_job_at("ok", {}, run_at)
    assert await count_jobs(ready) == 0


async def test_naive_datetime_in_bulk(ready: PostgresJobRunner) -> None:
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        await ready.schedule_jobs("ok", [{}], run_at=datetime(2030, 1, 1))
    assert await count_jobs(ready) == 0


async def test_bulk_with_one_bad_item_writes_nothing(ready: PostgresJobRunner) -> None:
    items: list[Any] = [{"i": i} for i in range(10)] + [{"bad": math.nan}]
    with pytest.raises(InvalidArgumentError, match=r"data\[10\]"):
        await ready.schedule_jobs("ok", items)
    with pytest.raises(InvalidArgumentError):
        await ready.schedule_jobs("ok", {"not": "a list"})
    with pytest.raises(InvalidArgumentError):
        await ready.schedule_jobs("ok", [{}], tenant="nope")
    with pytest.raises(InvalidArgumentError):
        await ready.schedule_jobs("ok", [{}, "x"])  # type: ignore[list-item]
    assert await count_jobs(ready) == 0


def test_unknown_options_of_the_sync_runner_are_typed(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    from jobrunner._errors import UnknownOptionError
    from jobrunner._sync import SyncJobRunner

    registry.add("ok", noop)
    pg = PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry, pool_size=1)
    with SyncJobRunner(pg) as sync:
        for call in (
            lambda: sync.schedule_job("ok", {}, bogus=1),
            lambda: sync.schedule_job_at("ok", {}, LATER, bogus=1),
            lambda: sync.schedule_jobs("ok", [{}], bogus=1),
        ):
            with pytest.raises(UnknownOptionError, match="bogus") as info:
                call()
            assert isinstance(info.value, InvalidArgumentError)
            assert isinstance(info.value, TypeError)  # what Python raises, for compatibility
        assert sync.list_jobs().jobs == []


async def test_unknown_options_are_typed_errors_of_the_async_runner_too(
    ready: PostgresJobRunner,
) -> None:
    from jobrunner._errors import UnknownOptionError

    for call in (
        lambda: ready.schedule_job("ok", {}, bogus=1),  # type: ignore[call-arg]
        lambda: ready.schedule_job_at("ok", {}, LATER, bogus=1),  # type: ignore[call-arg]
        lambda: ready.schedule_jobs("ok", [{}], bogus=1),  # type: ignore[call-arg]
        lambda: ready.schedule_recurring_job("ok", {}, "5 minutes", bogus=1),  # type: ignore[call-arg]
    ):
        with pytest.raises(UnknownOptionError, match="bogus") as info:
            await call()
        assert isinstance(info.value, TypeError)  # what Python raised before, for compatibility
    assert await count_jobs(ready) == 0


async def test_unknown_worker_option(ready: PostgresJobRunner) -> None:
    with pytest.raises(InvalidArgumentError, match="bogus"):
        ready.create_worker(bogus=1)
    with pytest.raises(InvalidArgumentError, match="bogus"):
        WorkerSettings.build(bogus=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"concurrency": -3},
        {"concurrency": 1.5},
        {"queues": "default"},
        {"lease_seconds": 0},
        {"lease_seconds": -1},
        {"poll_interval": 0},
        {"lease_seconds": "5"},
        {"lease_seconds": float("nan")},
        {"concurrency": True},
        {"heartbeat_interval": 30, "lease_seconds": 10},
        {"rescue_interval": -1},
        {"claim_batch": 0},
        {"sync_threads": "4"},
        {"flush_max": 0},
        {"queues": ["ok", ""]},
        {"worker_id": "not-a-uuid"},
        {"rand": 0.5},
        {"shutdown_grace": -1},
    ],
)
async def test_bad_worker_settings(ready: PostgresJobRunner, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        ready.create_worker(**kwargs)


def test_worker_settings_accept_timedeltas() -> None:
    from datetime import timedelta as td

    settings = WorkerSettings.build(
        lease_seconds=td(seconds=12),
        shutdown_grace=0,
        heartbeat_interval=td(seconds=2),
        queues=["a", "b"],
    )
    assert settings.lease_seconds == 12.0 and settings.heartbeat_every == 2.0
    assert settings.shutdown_grace == 0.0 and settings.queues == ("a", "b")


async def test_malformed_job_ids(ready: PostgresJobRunner) -> None:
    await ready.schedule_job("ok", {})
    before_details = await count_details(ready)
    for job_id in ("nope", 42, None, "1234", uuid.uuid4().hex[:-1]):
        for method in (ready.get_job_status, ready.cancel_job, ready.get_job_details):
            with pytest.raises(InvalidArgumentError, match="job_id"):
                await method(job_id)  # type: ignore[operator]
    assert await count_jobs(ready) == 1
    assert await count_details(ready) == before_details


async def test_malformed_tenant_on_reads(ready: PostgresJobRunner) -> None:
    handle = await ready.schedule_job("ok", {})
    with pytest.raises(InvalidArgumentError, match="tenant"):
        await ready.get_job_status(handle.job_id, tenant="nope")
    with pytest.raises(InvalidArgumentError, match="tenant"):
        await ready.cancel_job(handle.job_id, tenant=123)  # type: ignore[arg-type]
    info = await ready.get_job_status(handle.job_id)
    assert info is not None and info.status == "queued"


async def test_bad_cancel_arguments(ready: PostgresJobRunner) -> None:
    handle = await ready.schedule_job("ok", {})
    with pytest.raises(InvalidArgumentError):
        await ready.cancel_job(handle.job_id, reason=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await ready.cancel_job(handle.job_id, cancelled_by=object())  # type: ignore[arg-type]
    info = await ready.get_job_status(handle.job_id)
    assert info is not None and info.status == "queued"


def test_errors_are_jobrunner_errors() -> None:
    assert issubclass(InvalidArgumentError, JobRunnerError)
    assert issubclass(InvalidArgumentError, ValueError)


async def test_bad_runner_construction(jobrunner_dsn: str) -> None:
    with pytest.raises(InvalidArgumentError):
        PostgresJobRunner(None)
    with pytest.raises(InvalidArgumentError, match="schema"):
        PostgresJobRunner(jobrunner_dsn, schema='x"; DROP TABLE jobs; --')
    with pytest.raises(InvalidArgumentError, match="schema"):
        PostgresJobRunner(jobrunner_dsn, schema="s" * 54)  # its NOTIFY channels would not fit
    PostgresJobRunner(jobrunner_dsn, schema="s" * 53)
    for size in (0, -1, "3", True, 2.5):
        with pytest.raises(InvalidArgumentError, match="pool"):
            PostgresJobRunner(jobrunner_dsn, pool_size=size)  # type: ignore[arg-type]
