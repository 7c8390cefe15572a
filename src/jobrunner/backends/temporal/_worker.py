"""TemporalWorker: a temporalio Worker for the job workflow and the registered handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from jobrunner._errors import InvalidArgumentError
from jobrunner._runner import JobWorker
from jobrunner.backends.temporal._activities import JobActivities
from jobrunner.backends.temporal._workflow import JobWorkflow

if TYPE_CHECKING:
    from jobrunner.backends.temporal._runner import TemporalJobRunner

logger = logging.getLogger("jobrunner.temporal.worker")

#: PostgreSQL worker options that mean nothing on Temporal; accepted so the same CLI flags and
#: embedding code work with both backends.
_IGNORED_OPTIONS = frozenset(
    {
        "lease_seconds",
        "rescue_interval",
        "poll_interval",
        "claim_batch",
        "flush_interval",
        "flush_max",
        "listen_probe_interval",
        "rand",
        # Temporal Schedules fire recurring jobs on the server; there is no scheduler loop.
        "run_scheduler",
    }
)


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

    @classmethod
    def build(
        cls,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> TemporalWorkerSettings:
        """Validate and build settings; unknown options are a clear error."""
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in options.items() if k not in _IGNORED_OPTIONS}
        unknown = set(values) - known
        if unknown:
            raise InvalidArgumentError(f"unknown worker options: {', '.join(sorted(unknown))}")
        if concurrency is not None:
            values["concurrency"] = concurrency
        if queues is not None:
            if isinstance(queues, str):
                raise InvalidArgumentError("queues must be a sequence of names, not a string")
            values["queues"] = tuple(queues)
        settings = cls(**values)
        if not isinstance(settings.concurrency, int) or settings.concurrency < 1:
            raise InvalidArgumentError("concurrency must be a positive integer")
        if settings.shutdown_grace < 0 or settings.heartbeat_interval <= 0:
            raise InvalidArgumentError(
                "shutdown_grace must be >= 0 and heartbeat_interval positive"
            )
        return settings


class TemporalWorker(JobWorker):
    """Runs the job workflow and its activities for a :class:`TemporalJobRunner`.

    ``await worker.run()`` until ``await worker.stop()``; the CLI ``jobrunner-worker`` does
    this when ``JOB_RUNNER_TYPE=temporal``.
    """

    def __init__(self, runner: TemporalJobRunner, settings: TemporalWorkerSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.worker_id = settings.worker_id
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._activities: JobActivities | None = None

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

    async def run(self) -> None:
        """Poll the task queue until :meth:`stop`, then shut down gracefully."""
        await self.runner.start()
        executor = ThreadPoolExecutor(
            max_workers=self.settings.sync_threads or self.settings.concurrency,
            thread_name_prefix="jobrunner-temporal-sync",
        )
        activities = JobActivities(
            self.runner,
            worker_id=self.worker_id,
            executor=executor,
            heartbeat_every=min(
                self.settings.heartbeat_interval, self.runner.heartbeat_timeout / 3
            ),
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
        try:
            async with worker:
                self._started.set()
                await self._stop.wait()
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
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    def _cancel_running(self) -> None:
        if self._activities is None:
            return
        for task in list(self._activities.running.values()):
            with contextlib.suppress(RuntimeError):
                task.cancel()

    @property
    def running_jobs(self) -> int:
        """Handlers running right now."""
        return 0 if self._activities is None else len(self._activities.running)

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
