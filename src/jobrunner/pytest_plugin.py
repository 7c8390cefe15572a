"""pytest plugin (entry point ``pytest11``): fixtures for testing code that uses jobrunner.

Fixtures:
    jobrunner_dsn: a PostgreSQL DSN (``--jobrunner-dsn``, ``JOBRUNNER_TEST_DSN``, local server,
        testcontainers, or a private cluster).
    job_runner: a started :class:`PostgresJobRunner` in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from jobrunner.testing._database import find_test_dsn, isolated_schema


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--jobrunner-dsn``."""
    group = parser.getgroup("jobrunner")
    group.addoption(
        "--jobrunner-dsn",
        default=None,
        help="PostgreSQL to test against (default: JOBRUNNER_TEST_DSN, then discovery)",
    )


@pytest.fixture(scope="session")
def jobrunner_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL DSN for the test session."""
    try:
        with find_test_dsn(request.config.getoption("--jobrunner-dsn")) as dsn:
            yield dsn
    except Exception as exc:  # noqa: BLE001 - turn any discovery failure into one clear error
        pytest.fail(
            "jobrunner could not find or start a PostgreSQL for tests: "
            f"{exc}. Pass --jobrunner-dsn or set JOBRUNNER_TEST_DSN.",
            pytrace=False,
        )


@pytest.fixture
async def job_runner(jobrunner_dsn: str) -> AsyncIterator[object]:
    """A started PostgreSQL runner in an isolated schema (the default handler registry)."""
    from jobrunner.backends.postgres import PostgresJobRunner

    async with isolated_schema(jobrunner_dsn) as schema:
        runner = PostgresJobRunner(jobrunner_dsn, schema=schema, pool_size=5)
        await runner.start()
        try:
            yield runner
        finally:
            await runner.close()
