"""Fixtures for jobrunner's own tests (the public plugin provides ``jobrunner_dsn``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from jobrunner import JobHandlerRegistry
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.testing import isolated_schema


@pytest.fixture(autouse=True)
def _isolated_pytester(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A nested pytest run (``pytester``) must not inherit the Django test project's settings:
    tests/contrib's conftest sets ``DJANGO_SETTINGS_MODULE`` for this session, and
    pytest-django would configure that project in the nested run, changing its output."""
    if "pytester" in request.fixturenames:
        monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
        monkeypatch.delenv("JR_DJANGO_SCHEMA", raising=False)


@pytest.fixture
def registry() -> JobHandlerRegistry:
    """A fresh handler registry per test, so tests never share handlers."""
    return JobHandlerRegistry()


@pytest.fixture
async def schema(jobrunner_dsn: str) -> AsyncIterator[str]:
    """A schema of its own for this test, dropped afterwards."""
    async with isolated_schema(jobrunner_dsn) as name:
        yield name


@pytest.fixture
async def make_runner(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> AsyncIterator[Callable[..., Awaitable[PostgresJobRunner]]]:
    """Build extra started runners on the test's schema (closed at teardown)."""
    made: list[PostgresJobRunner] = []

    async def make(**options: object) -> PostgresJobRunner:
        options.setdefault("registry", registry)
        options.setdefault("pool_size", 4)
        runner = PostgresJobRunner(jobrunner_dsn, schema=schema, **options)  # type: ignore[arg-type]
        await runner.start()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        await runner.close()


@pytest.fixture
async def runner(
    make_runner: Callable[..., Awaitable[PostgresJobRunner]],
) -> PostgresJobRunner:
    """A started PostgreSQL runner on an isolated schema with the test's registry."""
    return await make_runner()
