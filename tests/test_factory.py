"""JobRunnerFactory and Settings: runners from the environment, aliases, singletons."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobrunner import (
    ConfigurationError,
    JobRunnerFactory,
    JobScheduler,
    JobStatus,
    SyncJobRunner,
    UnavailableError,
)
from jobrunner._config import Settings
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.registry import default_registry


@pytest.fixture
async def env(
    monkeypatch: pytest.MonkeyPatch, jobrunner_dsn: str, schema: str
) -> AsyncIterator[pytest.MonkeyPatch]:
    """A clean factory and environment pointing at the test's schema."""
    for name in (
        "JOB_RUNNER_TYPE",
        "DATABASE_URL",
        "JOBRUNNER_DATABASE_URL",
        "JOBRUNNER_SCHEMA",
        "JOBRUNNER_AUTO_MIGRATE",
        "JOBRUNNER_REQUIRE_REGISTERED",
        "JOBRUNNER_POOL_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", jobrunner_dsn)
    monkeypatch.setenv("JOBRUNNER_SCHEMA", schema)
    monkeypatch.setenv("JOBRUNNER_POOL_SIZE", "2")
    await JobRunnerFactory.reset()
    yield monkeypatch
    await JobRunnerFactory.reset()


@pytest.mark.parametrize("kind", ["postgres", "pgboss", "PgBoss", " postgresql "])
async def test_postgres_and_alias_from_env(env: pytest.MonkeyPatch, schema: str, kind: str) -> None:
    env.setenv("JOB_RUNNER_TYPE", kind)
    runner = await JobRunnerFactory.get_instance()
    assert isinstance(runner, PostgresJobRunner)
    assert runner.schema == schema
    assert runner.runner_type == "postgres" and runner.get_runner_type() == "postgres"
    assert await runner.is_healthy()
    assert await JobRunnerFactory.get_instance() is runner


async def test_concurrent_get_instance_builds_one(env: pytest.MonkeyPatch) -> None:
    runners = await asyncio.gather(*(JobRunnerFactory.get_instance() for _ in range(5)))
    assert len({id(r) for r in runners}) == 1


async def test_database_url_fallback(env: pytest.MonkeyPatch, jobrunner_dsn: str) -> None:
    env.delenv("JOBRUNNER_DATABASE_URL")
    env.setenv("DATABASE_URL", jobrunner_dsn)
    runner = await JobRunnerFactory.get_instance()
    assert isinstance(runner, PostgresJobRunner) and await runner.is_healthy()


@pytest.mark.parametrize("kind", ["redis", "bogus", "pg_boss2"])
async def test_invalid_type(env: pytest.MonkeyPatch, kind: str) -> None:
    env.setenv("JOB_RUNNER_TYPE", kind)
    with pytest.raises(ConfigurationError, match="JOB_RUNNER_TYPE"):
        await JobRunnerFactory.get_instance()
    assert JobRunnerFactory._instance is None


async def test_missing_database_url(env: pytest.MonkeyPatch) -> None:
    env.delenv("JOBRUNNER_DATABASE_URL")
    with pytest.raises(ConfigurationError, match="JOBRUNNER_DATABASE_URL"):
        await JobRunnerFactory.get_instance()


def test_settings_from_env_parsing() -> None:
    s = Settings.from_env(
        {
            "JOB_RUNNER_TYPE": "pgboss",
            "DATABASE_URL": "postgresql://x/y",
            "JOBRUNNER_SCHEMA": "jobs2",
            "JOBRUNNER_AUTO_MIGRATE": "off",
            "JOBRUNNER_REQUIRE_REGISTERED": "false",
        }
    )
    assert s.runner_type == "postgres" and s.database_url == "postgresql://x/y"
    assert s.schema == "jobs2" and s.auto_migrate is False and s.require_registered is False
    s2 = Settings.from_env({"JOBRUNNER_DATABASE_URL": "a", "DATABASE_URL": "b"})
    assert s2.database_url == "a" and s2.schema == "jobrunner" and s2.runner_type == "postgres"
    with pytest.raises(ConfigurationError):
        Settings.from_env({"JOBRUNNER_AUTO_MIGRATE": "maybe"})
    with pytest.raises(ConfigurationError):
        Settings.from_env({"JOBRUNNER_POOL_SIZE": "ten"})
    with pytest.raises(ConfigurationError):
        Settings.from_env({"JOBRUNNER_POOL_SIZE": "0"})
    with pytest.raises(ConfigurationError):
        Settings.from_env({"JOB_RUNNER_TYPE": "nope"})


async def test_set_instance_and_reset(
    env: pytest.MonkeyPatch, jobrunner_dsn: str, schema: str
) -> None:
    mine = PostgresJobRunner(jobrunner_dsn, schema=schema, pool_size=1)
    await mine.start()
    JobRunnerFactory.set_instance(mine)
    assert await JobRunnerFactory.get_instance() is mine
    await JobRunnerFactory.reset()
    assert JobRunnerFactory._instance is None
    # reset closed it: a closed runner reports unhealthy and refuses work with a typed error
    assert await mine.is_healthy() is False
    with pytest.raises(UnavailableError):
        await mine.get_job_status(uuid.uuid4())
    fresh = await JobRunnerFactory.get_instance()
    assert fresh is not mine


async def test_require_registered_switch(env: pytest.MonkeyPatch) -> None:
    env.setenv("JOBRUNNER_REQUIRE_REGISTERED", "false")
    runner = await JobRunnerFactory.get_instance()
    handle = await runner.schedule_job("producer-only-job", {"x": 1})
    info = await runner.get_job_status(handle.job_id)
    assert info is not None and info.status is JobStatus.QUEUED


async def test_auto_migrate_off(env: pytest.MonkeyPatch, schema: str) -> None:
    env.setenv("JOBRUNNER_AUTO_MIGRATE", "false")
    env.setenv("JOBRUNNER_REQUIRE_REGISTERED", "false")
    runner = await JobRunnerFactory.get_instance()
    assert isinstance(runner, PostgresJobRunner)
    with pytest.raises(Exception) as caught:
        await runner.schedule_job("x", {})
    assert "does not exist" in str(caught.value)
    assert await runner.migrate()  # applies now
    assert (await runner.schedule_job("x", {})).created


async def test_get_sync_instance(env: pytest.MonkeyPatch) -> None:
    env.setenv("JOBRUNNER_REQUIRE_REGISTERED", "false")

    def use() -> tuple[SyncJobRunner, Any]:
        sync = JobRunnerFactory.get_sync_instance()
        assert JobRunnerFactory.get_sync_instance() is sync
        handle = sync.schedule_job("sync-factory-job", {"a": 1})
        return sync, sync.get_job_status(handle.job_id)

    sync, info = await asyncio.to_thread(use)
    assert isinstance(sync, SyncJobRunner)
    assert isinstance(sync.runner, PostgresJobRunner)
    assert info is not None and info.status is JobStatus.QUEUED
    await JobRunnerFactory.reset()
    assert JobRunnerFactory._sync_instance is None
    assert not sync._thread.is_alive()


async def test_legacy_scheduler_through_factory(env: pytest.MonkeyPatch) -> None:
    name = f"legacy-factory-{uuid.uuid4().hex[:6]}"

    async def handler(ctx: Any, data: dict[str, Any]) -> None:
        return None

    default_registry().add(name, handler)
    try:
        scheduler = await JobScheduler.get_instance()
        tenant = uuid.uuid4()
        job_id = await scheduler.schedule_immediate_job(name, {"tenantId": str(tenant)})
        runner = await JobRunnerFactory.get_instance()
        assert scheduler.runner is runner
        info = await runner.get_job_status(job_id, tenant=tenant)
        assert info is not None and info.name == name
    finally:
        default_registry().remove(name)


def test_get_instance_from_successive_event_loops(env: pytest.MonkeyPatch) -> None:
    """Each loop (like each pytest-asyncio test) can build the singleton, even under
    contention; a lock from an earlier loop must not be reused."""

    async def contend() -> None:
        runners = await asyncio.gather(*(JobRunnerFactory.get_instance() for _ in range(3)))
        assert len({id(r) for r in runners}) == 1
        await JobRunnerFactory.reset()

    asyncio.run(contend())
    asyncio.run(contend())


def test_sync_runner_that_cannot_start_leaks_no_thread() -> None:
    import threading

    before = {t.ident for t in threading.enumerate()}
    dead = PostgresJobRunner("postgresql://postgres@127.0.0.1:1/none", pool_size=1)
    with pytest.raises(UnavailableError):
        SyncJobRunner(dead)
    leaked = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.name == "jobrunner-sync-loop"
    ]
    assert leaked == []
