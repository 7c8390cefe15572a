"""TemporalWorker: a temporalio Worker for the job workflow and the registered handlers."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from jobrunner._db._database import Database
from jobrunner._db._store import JobStore
from jobrunner._errors import InvalidArgumentError, JobRunnerError
from jobrunner._execution import AbortReason
from jobrunner._limits import MAX_WORKER_COUNT, MAX_WORKER_INTERVAL_SECONDS
from jobrunner._models import ScheduledJob
from jobrunner._options import EnqueueOptions
from jobrunner._process import hard_exit
from jobrunner._runner import JobWorker
from jobrunner._validation import as_count, as_queues, as_seconds
from jobrunner.backends.postgres import PostgresJobRunner, PostgresWorker, WorkerSettings
from jobrunner.backends.temporal._activities import JobActivities
from jobrunner.backends.temporal._workflow import JobWorkflow
from jobrunner.registry import JobHandlerRegistry

logger = logging.getLogger("jobrunner.temporal.worker")

#: PostgreSQL worker options that mean nothing to the Temporal worker itself; accepted so the
#: same CLI flags and embedding code work with both backends, and passed on to the PostgreSQL
#: queue worker this worker also runs (``postgres_queue``). ``run_scheduler`` there fires
#: PostgreSQL recurring schedules (Temporal Schedules fire on the server).
_POSTGRES_QUEUE_OPTIONS = frozenset(
    {
        "lease_seconds",
        "rescue_interval",
        "poll_interval",
        "claim_batch",
        "prefetch",
        "flush_interval",
        "flush_max",
        "listen_probe_interval",
        "rand",
        "run_scheduler",
        "fair",
    }
)

#: Seconds between warnings that the PostgreSQL queue ran jobs (one line per interval at most).
FALLBACK_REPORT_INTERVAL = 30.0


@dataclass(frozen=True)
class TemporalWorkerSettings:
    """How a Temporal worker runs jobs."""

    concurrency: int = 20
    """Activities (handlers) running at once in this process."""
    queues: tuple[str, ...] = ()
    """Informational: every job of this runner goes through its one task queue."""
    shutdown_grace: float = 30.0
    """Seconds running handlers get to finish after a stop request before they are cancelled
    (Temporal then retries them on another worker)."""
    heartbeat_interval: float = 1.0
    """Seconds between heartbeats sent to the server; it bounds how long a cancellation takes
    to reach a running handler."""
    sync_threads: int | None = None
    """Threads for plain ``def`` handlers (default: ``concurrency``)."""
    worker_id: uuid.UUID = field(default_factory=uuid.uuid4)
    """Identity written to ``jobs.worker_id`` while this worker runs an attempt."""
    postgres_queue: bool = True
    """Also run the PostgreSQL queue in this process: jobs a producer wrote there
    (``runner_type = 'postgres'``) while it could not reach Temporal and the fallback was on
    are claimed and run by a :class:`~jobrunner.backends.postgres.PostgresWorker` on the same
    database and registry (docs/backends.md). ``--no-postgres-queue`` on the CLI."""
    postgres_options: dict[str, Any] = field(default_factory=dict)
    """PostgreSQL worker options for that queue (``lease_seconds``, ``poll_interval``,
    ``run_scheduler``, ...); ``concurrency``, ``queues``, ``shutdown_grace`` and
    ``sync_threads`` are this worker's own."""

    @classmethod
    def build(
        cls,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> TemporalWorkerSettings:
        """Validate and build settings; unknown options are a clear error."""
        # postgres_options is filled from the PostgreSQL worker options, never passed itself.
        known = set(cls.__dataclass_fields__) - {"postgres_options"}
        values = {k: v for k, v in options.items() if k not in _POSTGRES_QUEUE_OPTIONS}
        unknown = set(values) - known
        if unknown:
            raise InvalidArgumentError(f"unknown worker options: {', '.join(sorted(unknown))}")
        values["postgres_options"] = {
            k: v for k, v in options.items() if k in _POSTGRES_QUEUE_OPTIONS
        }
        if concurrency is not None:
            values["concurrency"] = concurrency
        if queues is not None:
            values["queues"] = as_queues(queues)
        # The same documented bounds as the PostgreSQL worker's (docs/reference/configuration.md).
        for name in ("concurrency", "sync_threads"):
            if values.get(name) is not None:
                values[name] = as_count(values[name], name, maximum=MAX_WORKER_COUNT)
        if "shutdown_grace" in values:
            values["shutdown_grace"] = as_seconds(
                values["shutdown_grace"],
                "shutdown_grace",
                allow_zero=True,
                maximum=MAX_WORKER_INTERVAL_SECONDS,
            )
        if "heartbeat_interval" in values:
            values["heartbeat_interval"] = as_seconds(
                values["heartbeat_interval"],
                "heartbeat_interval",
                maximum=MAX_WORKER_INTERVAL_SECONDS,
            )
        settings = cls(**values)
        if not isinstance(settings.postgres_queue, bool):
            raise InvalidArgumentError("postgres_queue must be True or False")
        # Validated now, so a bad option fails here rather than when the worker runs.
        WorkerSettings.build(**settings.postgres_worker_options())
        return settings

    def postgres_worker_options(self) -> dict[str, Any]:
        """``create_worker`` arguments of the PostgreSQL queue worker run alongside."""
        return {
            "concurrency": self.concurrency,
            "queues": self.queues,
            "shutdown_grace": self.shutdown_grace,
            "sync_threads": self.sync_threads,
            **self.postgres_options,
        }


class WorkerHost(Protocol):
    """What a :class:`TemporalWorker` uses of the
    :class:`~jobrunner.backends.temporal.TemporalJobRunner` that builds it."""

    @property
    def db(self) -> Database:
        """The jobs tables' database (its pool is the runner's)."""

    @property
    def store(self) -> JobStore:
        """The jobs tables."""

    @property
    def registry(self) -> JobHandlerRegistry:
        """The handlers to run."""

    @property
    def require_registered(self) -> bool:
        """Whether unregistered names are refused."""

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds without a heartbeat before Temporal retries an attempt elsewhere."""

    @property
    def client(self) -> Client:
        """The connected Temporal client."""

    @property
    def address(self) -> str:
        """The Temporal frontend (for log lines)."""

    @property
    def namespace(self) -> str:
        """The Temporal namespace."""

    @property
    def task_queue(self) -> str:
        """The task queue of the job workflows and activities."""

    async def start(self) -> None:
        """Connect and prepare the schema (idempotent)."""

    async def schedule_child(
        self,
        ctx: Any,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: EnqueueOptions,
    ) -> ScheduledJob:
        """``ctx.schedule_job`` of handlers."""


class TemporalWorker(JobWorker):
    """Runs the job workflow and its activities for a :class:`TemporalJobRunner`.

    ``await worker.run()`` until ``await worker.stop()``; the CLI ``jobrunner-worker`` does
    this when ``JOB_RUNNER_TYPE=temporal``.
    """

    def __init__(self, runner: WorkerHost, settings: TemporalWorkerSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.worker_id = settings.worker_id
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._activities: JobActivities | None = None
        self._postgres_runs_reported = 0
        self.postgres_worker: PostgresWorker | None = None
        """The PostgreSQL queue worker run alongside (``None`` with ``postgres_queue=False``).
        It has its own ``worker_id``: the PostgreSQL heartbeat extends every ``processing``
        row of its id, and must never touch the rows of this worker's Temporal attempts."""
        if settings.postgres_queue:
            # The same database (pool, schema) and registry as the Temporal runner. Never
            # closed here: the pool is the Temporal runner's, closed with it.
            postgres = PostgresJobRunner(
                database=runner.db,
                registry=runner.registry,
                require_registered=runner.require_registered,
                auto_migrate=False,  # the Temporal runner prepared the schema when it started
            )
            self.postgres_worker = postgres.create_worker(**settings.postgres_worker_options())

    @property
    def started(self) -> asyncio.Event:
        """Set once the Temporal worker is polling its task queue."""
        return self._started

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop polling; running handlers get ``grace`` seconds (default ``shutdown_grace``),
        then are cancelled and retried by Temporal elsewhere. Calling again with a shorter
        grace (the CLI's second signal sends 0) cuts the wait short."""
        if grace is not None and grace < self.settings.shutdown_grace:
            # The temporalio worker's own grace is fixed when it is built: cancel what still
            # runs after this shorter one ourselves (Temporal retries those attempts).
            asyncio.get_running_loop().call_later(max(grace, 0.0), self._cancel_running)
        self._stop.set()
        if self.postgres_worker is not None:
            # Both drain at once: the PostgreSQL queue hands unfinished jobs back on its own.
            await self.postgres_worker.stop(grace=grace)

    async def run(self) -> None:
        """Poll the task queue until :meth:`stop`, then shut down gracefully."""
        await self.runner.start()
        executor = ThreadPoolExecutor(
            max_workers=self.settings.sync_threads or self.settings.concurrency,
            thread_name_prefix="jobrunner-temporal-sync",
        )
        activities = JobActivities(
            self.runner.registry,
            self.runner.store,
            worker_id=self.worker_id,
            executor=executor,
            heartbeat_every=min(
                self.settings.heartbeat_interval, self.runner.heartbeat_timeout / 3
            ),
            scheduler=self.runner.schedule_child,
        )
        self._activities = activities
        hb = timedelta(seconds=self.settings.heartbeat_interval)
        worker = Worker(
            self.runner.client,
            task_queue=self.runner.task_queue,
            workflows=[JobWorkflow],
            activities=activities.definitions(),
            max_concurrent_activities=self.settings.concurrency,
            graceful_shutdown_timeout=timedelta(seconds=self.settings.shutdown_grace),
            max_heartbeat_throttle_interval=hb,
            default_heartbeat_throttle_interval=hb,
            identity=f"jobrunner-{self.worker_id}@{socket.gethostname()}",
            # jobrunner is deterministic where the workflow uses it (plain dataclasses);
            # passing it through keeps psycopg and friends out of the sandbox.
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules("jobrunner")
            ),
        )
        self._log_banner()
        postgres_task: asyncio.Task[None] | None = None
        try:
            async with worker:
                if self.postgres_worker is not None:
                    postgres_task = await self._start_postgres_queue(self.postgres_worker)
                self._started.set()
                await self._wait_for_stop(postgres_task)
        finally:
            try:
                if postgres_task is not None:
                    await self._finish_postgres_queue(postgres_task)
            finally:
                executor.shutdown(wait=False, cancel_futures=True)
                logger.info("jobrunner temporal worker %s stopped", self.worker_id)

    def exit_process(self, code: int) -> NoReturn:
        """End the process with ``code`` after a clean shutdown, skipping interpreter
        finalization. The CLI calls this once :meth:`run` has returned and the runner is closed.

        Why: temporalio's native (Rust) runtime keeps threads that may touch Python thread
        states while the interpreter finalizes, aborting a finished process with
        ``Fatal Python error: PyGILState_Release`` (sdk-python issue #300; seen in most runs
        here). Everything that matters is done by then: the worker has shut down (activity
        results reported to the server), the database pool is closed. So flush the logs and
        standard streams and leave with ``os._exit``.
        """
        hard_exit(code)

    def _cancel_running(self) -> None:
        if self._activities is None:
            return
        for attempt in list(self._activities.running.values()):
            attempt.abort(AbortReason.INTERRUPTED)

    @property
    def running_jobs(self) -> int:
        """Handlers running right now (Temporal activities and PostgreSQL queue jobs)."""
        activities = 0 if self._activities is None else len(self._activities.running)
        postgres = 0 if self.postgres_worker is None else self.postgres_worker.running_jobs
        return activities + postgres

    # -- the PostgreSQL queue (jobs written while the Temporal fallback was in effect) -----
    async def _start_postgres_queue(self, postgres: PostgresWorker) -> asyncio.Task[None]:
        """Run ``postgres`` in a task; return once it consumes (or has already ended)."""
        await self._warn_about_waiting_jobs(postgres)
        task = asyncio.create_task(postgres.run(), name="jobrunner-temporal-postgres-queue")
        ready = asyncio.create_task(postgres.started.wait())
        try:
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if task.done():
            task.result()  # why it could not start; a clean early end is a stop request
        return task

    async def _warn_about_waiting_jobs(self, postgres: PostgresWorker) -> None:
        try:
            async with self.runner.db.connection() as conn:
                cur = await conn.execute(
                    self.runner.db.queries.postgres_queue_waiting,
                    {"queues": list(postgres.queues)},
                )
                row = await cur.fetchone()
        except JobRunnerError as exc:
            # Only a notice: the queue worker itself retries its database.
            logger.warning("could not count jobs waiting in the PostgreSQL queue: %s", exc)
            return
        if row is None or not row["waiting"]:
            return
        logger.warning(
            "%d job(s) wait in the PostgreSQL queue (%d due now, oldest created %s), written "
            "while producers could not reach Temporal (JOB_RUNNER_FALLBACK_TO_PGBOSS); this "
            "worker runs them (queues %s)",
            row["waiting"],
            row["due"],
            row["oldest_created_at"],
            ",".join(postgres.queues),
        )

    async def _wait_for_stop(self, postgres_task: asyncio.Task[None] | None) -> None:
        """Wait for :meth:`stop`; warn about PostgreSQL queue jobs run meanwhile. Return early
        when the PostgreSQL queue worker ends on its own (its error is raised afterwards)."""
        stop = asyncio.create_task(self._stop.wait())
        watched: set[asyncio.Task[Any]] = {stop}
        if postgres_task is not None:
            watched.add(postgres_task)
        try:
            while True:
                await asyncio.wait(
                    watched,
                    timeout=FALLBACK_REPORT_INTERVAL,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self._report_postgres_queue_runs()
                if stop.done():
                    return
                if postgres_task is not None and postgres_task.done():
                    logger.error(
                        "the PostgreSQL queue worker of temporal worker %s ended unexpectedly; "
                        "stopping the worker",
                        self.worker_id,
                    )
                    return
        finally:
            stop.cancel()

    def _report_postgres_queue_runs(self) -> None:
        if self.postgres_worker is None:
            return
        claimed = self.postgres_worker.claimed_total
        if claimed > self._postgres_runs_reported:
            logger.warning(
                "temporal worker %s ran %d job(s) from the PostgreSQL queue (written while "
                "producers could not reach Temporal; %d in total since start)",
                self.worker_id,
                claimed - self._postgres_runs_reported,
                claimed,
            )
            self._postgres_runs_reported = claimed

    async def _finish_postgres_queue(self, task: asyncio.Task[None]) -> None:
        """Stop the PostgreSQL queue worker (if :meth:`stop` has not) and wait for it; its
        failure, if any, is raised here."""
        # Only a queue worker that ended before anyone asked is an error of its own; when the
        # Temporal side failed or run() was cancelled, that is what propagates.
        ended_unasked = task.done() and not self._stop.is_set()
        if self.postgres_worker is not None and not task.done():
            await self.postgres_worker.stop()
        try:
            await task
        finally:
            if not task.done():  # we were cancelled while it drained
                task.cancel()
            self._report_postgres_queue_runs()
        if ended_unasked:
            raise JobRunnerError(
                f"the PostgreSQL queue worker of temporal worker {self.worker_id} ended "
                "without a stop request"
            )

    def _log_banner(self) -> None:
        handlers = ", ".join(self.runner.registry.names()) or "(none)"
        logger.info(
            "jobrunner worker %s starting: backend=temporal address=%s namespace=%s "
            "task_queue=%s concurrency=%d handlers=[%s]",
            self.worker_id,
            self.runner.address,
            self.runner.namespace,
            self.runner.task_queue,
            self.settings.concurrency,
            handlers,
        )
