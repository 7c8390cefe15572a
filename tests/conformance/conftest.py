"""The conformance suite's backends: one behavioural test, run on every backend.

Each test takes the ``backend`` fixture, parametrised over ``memory``, ``postgres`` and
``temporal``. A backend declares what it cannot do in ``UNSUPPORTED`` (capability -> reason);
a test marked ``@pytest.mark.requires("capability")`` then reports an expected failure (xfail)
with that reason on that backend. Nothing is skipped silently.

The Temporal parameter exists only when ``jobrunner.backends.temporal`` is importable (checked at
collection time); otherwise it is collected as an xfail that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry, JobInfo, JobRunner, JobStatus, RetryPolicy, ScheduledJob
from jobrunner.testing import InMemoryJobRunner, adrain, isolated_schema, running_worker

#: Retries that do not slow the suite down (and jitter-free, so delays are predictable).
FAST_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.05, max_interval=0.1, jitter=0.0)

#: What each backend cannot do, with the reason reported on its xfail.
UNSUPPORTED: dict[str, dict[str, str]] = {
    "memory": {},
    "postgres": {},
    "temporal": {
        "time_travel": "Temporal timers and schedules run on the server's clock; a test cannot "
        "move it (the time-skipping test server is a separate product)",
    },
}

#: Behaviour a backend gets wrong today: reported as a strict xfail with the reason, so the
#: suite stays honest (a fix turns it into an XPASS failure: then delete the entry).
KNOWN_DRIFT: dict[str, dict[str, str]] = {
    "temporal": {},
}

_TEMPORAL_BUILT = importlib.util.find_spec("jobrunner.backends.temporal") is not None


def _params() -> list[Any]:
    params: list[Any] = ["memory", "postgres"]
    if _TEMPORAL_BUILT:
        params.append(pytest.param("temporal", marks=pytest.mark.temporal))
    else:
        params.append(
            pytest.param(
                "temporal",
                marks=pytest.mark.xfail(
                    run=False, reason="jobrunner.backends.temporal is not built in this tree"
                ),
            )
        )
    return params


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = None if callspec is None else callspec.params.get("backend")
        original = getattr(item, "originalname", item.name)
        reason = KNOWN_DRIFT.get(str(name), {}).get(original)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"known drift: {reason}"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires(*capabilities): backend capabilities the conformance test needs"
    )


@dataclass
class Backend:
    """A runner under test plus the backend-specific way to get its jobs run."""

    name: str
    runner: JobRunner
    registry: JobHandlerRegistry
    _run: Callable[[list[ScheduledJob], float], Awaitable[None]]
    _advance: Callable[[timedelta], Awaitable[None]] | None = None
    _worker: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def run(self, *handles: ScheduledJob, timeout: float = 60.0) -> list[JobInfo]:
        """Run everything due (at least ``handles``) to a final state; their final infos."""
        await self._run(list(handles), timeout)
        infos = []
        for handle in handles:
            info = await self.runner.wait_for_job(handle.job_id, tenant=handle.tenant, timeout=30)
            infos.append(info)
        return infos

    async def advance(self, delta: timedelta) -> None:
        """Let ``delta`` of time pass for due times and schedules, running what falls due."""
        assert self._advance is not None, f"{self.name} cannot move time (declare time_travel)"
        await self._advance(delta)

    def worker(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A worker running for the block (for tests that act while a job runs)."""
        assert self._worker is not None
        return self._worker()


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    check: Callable[[Any], bool],
    *,
    what: str,
    timeout: float = 30.0,
) -> Any:
    """Poll ``probe`` until ``check`` holds (no event exists for "the backend stored it")."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


@pytest.fixture(params=_params())
async def backend(
    request: pytest.FixtureRequest, registry: JobHandlerRegistry
) -> AsyncIterator[Backend]:
    """The backend under test, with the test's fresh registry."""
    name: str = request.param
    for marker in request.node.iter_markers("requires"):
        for capability in marker.args:
            reason = UNSUPPORTED[name].get(capability)
            if reason is not None:
                pytest.xfail(f"{name} does not support {capability}: {reason}")
    if name == "memory":
        made = await _memory(registry)
    elif name == "postgres":
        made = await _postgres(request, registry)
    else:
        made = await _temporal(request, registry)
    try:
        yield made
    finally:
        for cleanup in reversed(made.cleanups):
            await cleanup()


async def _memory(registry: JobHandlerRegistry) -> Backend:
    runner = InMemoryJobRunner(registry)

    async def run(handles: list[ScheduledJob], timeout: float) -> None:
        await adrain(runner, timeout=timeout)

    async def advance(delta: timedelta) -> None:
        await adrain(runner, until=delta)

    @contextlib.asynccontextmanager
    async def worker() -> AsyncIterator[Any]:
        async with running_worker(runner, grace=5.0) as w:
            yield w

    made = Backend("memory", runner, registry, run, advance, worker)
    made.cleanups.append(runner.close)
    return made


async def _postgres(request: pytest.FixtureRequest, registry: JobHandlerRegistry) -> Backend:
    from jobrunner.backends.postgres import PostgresJobRunner

    dsn: str = request.getfixturevalue("jobrunner_dsn")
    schema_cm = isolated_schema(dsn, prefix="jrconf")
    schema = await schema_cm.__aenter__()
    runner = PostgresJobRunner(dsn, schema=schema, registry=registry, pool_size=4)
    await runner.start()

    async def run(handles: list[ScheduledJob], timeout: float) -> None:
        await adrain(runner, timeout=timeout)

    async def advance(delta: timedelta) -> None:
        await adrain(runner, until=delta)

    @contextlib.asynccontextmanager
    async def worker() -> AsyncIterator[Any]:
        async with running_worker(runner, grace=5.0, poll_interval=0.5) as w:
            yield w

    made = Backend("postgres", runner, registry, run, advance, worker)

    async def drop() -> None:
        await schema_cm.__aexit__(None, None, None)

    made.cleanups += [drop, runner.close]
    return made


async def _temporal(request: pytest.FixtureRequest, registry: JobHandlerRegistry) -> Backend:
    from jobrunner.backends.temporal import TemporalJobRunner

    env = request.getfixturevalue("temporal_env")
    dsn: str = request.getfixturevalue("jobrunner_dsn")
    schema_cm = isolated_schema(dsn, prefix="jrconf")
    schema = await schema_cm.__aenter__()
    runner = TemporalJobRunner(
        dsn,
        schema=schema,
        registry=registry,
        address=env.address,
        namespace=env.namespace,
        task_queue=f"jobrunner-conformance-{uuid.uuid4().hex[:10]}",
        heartbeat_timeout=4.0,
        pool_size=4,
    )
    await runner.start()
    stack = contextlib.AsyncExitStack()

    async def run(handles: list[ScheduledJob], timeout: float) -> None:
        # A worker stays up for the rest of the test; Backend.run then awaits each handle.
        if not stack_started:
            await stack.enter_async_context(running_worker(runner, grace=5.0, concurrency=8))
            stack_started.append(True)

    stack_started: list[bool] = []

    @contextlib.asynccontextmanager
    async def worker() -> AsyncIterator[Any]:
        async with running_worker(runner, grace=5.0, concurrency=8) as w:
            yield w

    made = Backend("temporal", runner, registry, run, None, worker)

    async def drop() -> None:
        await schema_cm.__aexit__(None, None, None)

    made.cleanups += [drop, runner.close, stack.aclose]
    return made


def final(status: JobStatus) -> Callable[[Any], bool]:
    """A check for :func:`eventually`: the job info has ``status``."""
    return lambda info: info is not None and info.status is status
