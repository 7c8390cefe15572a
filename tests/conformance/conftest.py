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
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry, JobInfo, JobRunner, JobStatus, RetryPolicy, ScheduledJob
from jobrunner._queue._attempts import begin_attempt
from jobrunner._queue._store import ClaimedJob, ClaimRequest, QueueStore
from jobrunner._recurrence import DEFAULT_MISFIRE_GRACE
from jobrunner.testing import FakeClock, InMemoryJobRunner, adrain, isolated_schema, running_worker

#: Retries that do not slow the suite down (and jitter-free, so delays are predictable).
FAST_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.05, max_interval=0.1, jitter=0.0)

#: What each backend cannot do, with the reason reported on its xfail.
UNSUPPORTED: dict[str, dict[str, str]] = {
    "memory": {
        "worker_lease": "the in-memory worker takes no worker options but shutdown_grace "
        "(backends/memory/_runner.py, _WORKER_OPTIONS): its lease is the default 25 s, longer "
        "than a test should run to outlive it",
    },
    "postgres": {},
    "temporal": {
        "time_travel": "Temporal timers and schedules run on the server's clock; a test cannot "
        "move it (the time-skipping test server is a separate product)",
        "dead_worker": "Temporal has no queue store to claim a job from as a worker that dies: "
        "its server notices a dead worker by the activity heartbeat timeout and starts the next "
        "attempt elsewhere, with no row saying retrying meanwhile (tests/temporal/"
        "test_worker_process.py kills a real worker process mid-job and sees the job finish)",
    },
}
# Capabilities a test may require: ``time_travel`` (Backend.advance, .jump and .settle move the
# backend's clock for due times and schedule ticks), ``dead_worker`` (Backend.dead_worker
# claims a job as a worker that then stops, and .expire_leases lets its lease run out) and
# ``child_jobs`` (ctx.schedule_job in a handler; every backend has it today), and
# ``worker_lease`` (Backend.worker(lease_seconds=Backend.lease_seconds) gives its attempts a
# lease that short).

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
    _worker: Callable[..., contextlib.AbstractAsyncContextManager[Any]] | None = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: The backend's queue store (queue backends), for the moves a test cannot make through
    #: the runner API: a scheduler that looks late, a worker that dies.
    store: QueueStore | None = None
    _jump: Callable[[timedelta], Awaitable[None]] | None = None
    _settle: Callable[[], Awaitable[None]] | None = None
    _expire: Callable[[float], Awaitable[int]] | None = None

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

    #: How long a running attempt survives without a heartbeat: the workers' lease (queue
    #: backends, given to :meth:`worker` as ``lease_seconds``) or Temporal's heartbeat timeout.
    lease_seconds: float = 1.0

    def worker(self, **options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        """A worker running for the block (for tests that act while a job runs); ``options``
        go to ``create_worker``."""
        assert self._worker is not None
        return self._worker(**options)

    def let_time_pass(self, delta: timedelta) -> None:
        """Make ``delta`` pass on the clock the backend stamps jobs with: a fake clock is
        moved on; a real one moves by itself (poll with :func:`eventually`)."""
        clock = getattr(self.runner, "clock", None)
        if isinstance(clock, FakeClock):
            clock.set(clock.now() + delta)

    async def jump(self, delta: timedelta) -> None:
        """Time moves on by ``delta`` while no scheduler runs; then one scheduler pass fires
        what is due then, so ticks missed meanwhile meet the schedule's policies. Runs no job
        (:meth:`settle` does)."""
        assert self._jump is not None, f"{self.name} cannot move time (declare time_travel)"
        await self._jump(delta)

    async def settle(self) -> None:
        """Run every job due at the backend's present (after :meth:`jump`) to a final state."""
        assert self._settle is not None, f"{self.name} cannot move time (declare time_travel)"
        await self._settle()

    async def dead_worker(self, lease_seconds: float) -> tuple[ClaimedJob, Any]:
        """Claim the next due job of the default queue as a worker that then stops (no
        heartbeat, no outcome); returns the claim and its attempt's context (progress and
        steps go to the store, fenced by the claim)."""
        assert self.store is not None, f"{self.name} has no queue store (declare dead_worker)"
        claim = await self.store.claim(
            ClaimRequest(uuid.uuid4(), ("default",), limit=1, lease_seconds=lease_seconds)
        )
        [job] = claim.jobs
        attempt, _ = begin_attempt(job, self.registry, self.store)
        return job, attempt.ctx

    async def expire_leases(self, lease_seconds: float) -> int:
        """Let the dead worker's lease run out and rescue it; the jobs rescued."""
        assert self._expire is not None, f"{self.name} cannot expire leases (declare dead_worker)"
        return await self._expire(lease_seconds)


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
    async def worker(**options: Any) -> AsyncIterator[Any]:
        async with running_worker(runner, grace=5.0, **options) as w:
            yield w

    async def jump(delta: timedelta) -> None:
        clock = runner.clock
        assert isinstance(clock, FakeClock)
        clock.set(clock.now() + delta)
        await runner.store.fire_due_ticks(now=None, limit=1000, grace=DEFAULT_MISFIRE_GRACE)

    async def settle() -> None:
        await adrain(runner)

    async def expire(lease_seconds: float) -> int:
        # Leases are measured in real time (workers heartbeat in real time), the fake clock's
        # time is only what the rows say.
        return int(
            await eventually(runner.store.rescue_expired, lambda n: n > 0, what="an expired lease")
        )

    made = Backend("memory", runner, registry, run, advance, worker, store=runner.store)
    made._jump, made._settle, made._expire = jump, settle, expire
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
    async def worker(**options: Any) -> AsyncIterator[Any]:
        async with running_worker(runner, grace=5.0, poll_interval=0.5, **options) as w:
            yield w

    store = runner.queue_store()
    # Where the backend's present is after jumps: the database clock cannot be moved, so a
    # jump fires ticks at now + the time jumped, and settling runs what is due by then.
    jumped = [timedelta(0)]

    async def jump(delta: timedelta) -> None:
        jumped[0] += delta
        await runner.schedule_store.fire_due_ticks(
            now=datetime.now(UTC) + jumped[0], limit=1000, grace=DEFAULT_MISFIRE_GRACE
        )

    async def settle() -> None:
        await adrain(runner, until=jumped[0])

    async def expire(lease_seconds: float) -> int:
        # Real time must pass for the database to see the lease expired.
        return int(await eventually(store.rescue_expired, lambda n: n > 0, what="an expired lease"))

    made = Backend("postgres", runner, registry, run, advance, worker, store=store)
    made._jump, made._settle, made._expire = jump, settle, expire

    async def drop() -> None:
        await schema_cm.__aexit__(None, None, None)

    made.cleanups += [drop, runner.close, store.close]
    await store.open()
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
        heartbeat_timeout=4.0,  # Backend.lease_seconds
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
    async def worker(**options: Any) -> AsyncIterator[Any]:
        async with running_worker(runner, grace=5.0, concurrency=8, **options) as w:
            yield w

    made = Backend("temporal", runner, registry, run, None, worker, lease_seconds=4.0)

    async def drop() -> None:
        await schema_cm.__aexit__(None, None, None)

    made.cleanups += [drop, runner.close, stack.aclose]
    return made


def final(status: JobStatus) -> Callable[[Any], bool]:
    """A check for :func:`eventually`: the job info has ``status``."""
    return lambda info: info is not None and info.status is status
