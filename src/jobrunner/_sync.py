"""SyncJobRunner: the runner API as blocking calls, for sync host code.

The async runner lives on a private event loop in a daemon thread; each method hands its
coroutine to that loop and waits. A ``connection=`` argument must then be a sync
``psycopg.Connection``: the job is written with it in the caller's thread and transaction.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, Unpack

from jobrunner._config import Settings
from jobrunner._errors import ConfigurationError, InvalidArgumentError, JobTimeoutError
from jobrunner._from_settings import runner_from_settings
from jobrunner._models import (
    JobDetails,
    JobInfo,
    JobPage,
    JobStatus,
    Metrics,
    ScheduledJob,
    ScheduleInfo,
)
from jobrunner._options import BulkOptions, EnqueueOptions, RecurringOptions, checked_options
from jobrunner._runner import (
    AllTenants,
    HistoryScope,
    JobRunner,
    JobWorker,
    TenantArg,
    wait_timeout_message,
)
from jobrunner._telemetry import enqueue_boundary
from jobrunner._validation import as_aware_datetime
from jobrunner.backends.postgres import PostgresJobRunner, SyncFlowControl
from jobrunner.compat import SeedRunnerNames

T = TypeVar("T")


class SyncJobRunner(SeedRunnerNames):
    """Blocking twin of :class:`JobRunner` with the same method names.

    Build it with :meth:`JobRunnerFactory.get_sync_instance` or ``SyncJobRunner(runner)``.
    """

    def __init__(self, runner: JobRunner | Callable[[], Coroutine[Any, Any, JobRunner]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jobrunner-sync-loop", daemon=True
        )
        self._thread.start()
        try:
            if isinstance(runner, JobRunner):
                self.runner = runner
                self._call(runner.start())
            else:
                self.runner = self._call(runner())
        except BaseException:
            # Do not leak the loop thread when the runner cannot start.
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            raise
        self._closed = False

    @classmethod
    def from_factory(cls, settings: Settings | None = None) -> SyncJobRunner:
        """Build the runner the factory would, owned by a private loop."""
        return cls(lambda: runner_from_settings(settings))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def runner_type(self) -> str:
        """The wrapped backend's name."""
        return self.runner.runner_type

    @property
    def flow(self) -> SyncFlowControl:
        """Blocking twin of ``PostgresJobRunner.flow`` (fairness and flow control)."""
        flow = getattr(self.runner, "flow", None)
        if flow is None:
            raise ConfigurationError(f"{self.runner_type} runners have no flow control")
        return SyncFlowControl(flow, self._call)

    def close(self) -> None:
        """Close the runner and stop the private loop."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._call(self.runner.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncJobRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API ----------------------------------------------------------------------------
    # Every method of JobRunner, with its parameters (names, kinds, defaults): a test
    # compares the two classes. Unknown keywords raise UnknownOptionError (also a TypeError).
    @checked_options
    def start(self) -> None:
        """See :meth:`JobRunner.start`; the constructor already started the runner, so this
        only matters after a failed start-up was retried by the caller. Idempotent."""
        self._call(self.runner.start())

    @checked_options
    def is_healthy(self) -> bool:
        """See :meth:`JobRunner.is_healthy`."""
        return self._call(self.runner.is_healthy())

    @enqueue_boundary
    @checked_options
    def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """See :meth:`JobRunner.schedule_job`; ``connection`` is a sync psycopg connection."""
        connection = options.get("connection")
        if connection is not None:
            return self._postgres().schedule_on_sync_connection(
                connection, name, data, None, options
            )
        return self._call(self.runner.schedule_job(name, data, **options))

    @enqueue_boundary
    @checked_options
    def schedule_job_at(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """See :meth:`JobRunner.schedule_job_at`; ``connection`` as :meth:`schedule_job`."""
        connection = options.get("connection")
        if connection is not None:
            return self._postgres().schedule_on_sync_connection(
                connection, name, data, as_aware_datetime(run_at), options
            )
        return self._call(self.runner.schedule_job_at(name, data, run_at, **options))

    @enqueue_boundary
    @checked_options
    def schedule_jobs(
        self,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[ScheduledJob]:
        """See :meth:`JobRunner.schedule_jobs`; ``connection`` as :meth:`schedule_job`."""
        connection = options.get("connection")
        if connection is not None:
            return self._postgres().schedule_many_on_sync_connection(
                connection, name, data, options
            )
        return self._call(self.runner.schedule_jobs(name, data, **options))

    @checked_options
    def schedule_recurring_job(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        expression: str,
        **options: Unpack[RecurringOptions],
    ) -> ScheduledJob:
        """See :meth:`JobRunner.schedule_recurring_job`."""
        return self._call(self.runner.schedule_recurring_job(name, data, expression, **options))

    @checked_options
    def list_schedules(self, *, tenant: TenantArg = None) -> list[ScheduleInfo]:
        """See :meth:`JobRunner.list_schedules`."""
        return self._call(self.runner.list_schedules(tenant=tenant))

    @checked_options
    def pause_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """See :meth:`JobRunner.pause_schedule`."""
        return self._call(self.runner.pause_schedule(job_id, tenant=tenant))

    @checked_options
    def resume_schedule(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """See :meth:`JobRunner.resume_schedule`."""
        return self._call(self.runner.resume_schedule(job_id, tenant=tenant))

    @checked_options
    def get_job_status(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobInfo | None:
        """See :meth:`JobRunner.get_job_status`."""
        return self._call(self.runner.get_job_status(job_id, tenant=tenant))

    @checked_options
    def cancel_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        reason: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """See :meth:`JobRunner.cancel_job`."""
        return self._call(
            self.runner.cancel_job(job_id, tenant=tenant, reason=reason, cancelled_by=cancelled_by)
        )

    @checked_options
    def retry_job(self, job_id: uuid.UUID | str, *, tenant: TenantArg = None) -> bool:
        """See :meth:`JobRunner.retry_job`."""
        return self._call(self.runner.retry_job(job_id, tenant=tenant))

    @checked_options
    def get_job_details(
        self, job_id: uuid.UUID | str, *, tenant: TenantArg = None
    ) -> JobDetails | None:
        """See :meth:`JobRunner.get_job_details`."""
        return self._call(self.runner.get_job_details(job_id, tenant=tenant))

    @checked_options
    def list_jobs(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        status: JobStatus | str | Sequence[JobStatus | str] | None = None,
        name: str | None = None,
        runner_type: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """See :meth:`JobRunner.list_jobs`."""
        return self._call(
            self.runner.list_jobs(
                tenant=tenant,
                status=status,
                name=name,
                runner_type=runner_type,
                created_after=created_after,
                created_before=created_before,
                search=search,
                limit=limit,
                cursor=cursor,
            )
        )

    @checked_options
    def get_metrics(self, *, tenant: TenantArg | AllTenants = None) -> Metrics:
        """See :meth:`JobRunner.get_metrics`."""
        return self._call(self.runner.get_metrics(tenant=tenant))

    @checked_options
    def clear_history(
        self,
        *,
        tenant: TenantArg | AllTenants = None,
        scope: HistoryScope = "finished",
        older_than: timedelta | float | None = None,
    ) -> int:
        """See :meth:`JobRunner.clear_history`."""
        return self._call(
            self.runner.clear_history(tenant=tenant, scope=scope, older_than=older_than)
        )

    @checked_options
    def wait_for_job(
        self,
        job_id: uuid.UUID | str,
        *,
        tenant: TenantArg = None,
        timeout: float | None = None,
        poll_interval: float = 0.05,
    ) -> JobInfo:
        """See :meth:`JobRunner.wait_for_job`.

        Raises:
            JobTimeoutError: ``timeout`` seconds passed first (also a ``TimeoutError``).
        """
        try:
            return self._call(
                self.runner.wait_for_job(
                    job_id, tenant=tenant, timeout=timeout, poll_interval=poll_interval
                )
            )
        except TimeoutError as exc:
            if isinstance(exc, JobTimeoutError):
                raise
            raise JobTimeoutError(wait_timeout_message(job_id, timeout)) from exc

    def create_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> SyncJobWorker:
        """See :meth:`JobRunner.create_worker`: a blocking worker on this runner's loop.

        The async worker is built on the private loop, where the runner's connections live
        (it could not run on another loop); the :class:`SyncJobWorker` returned runs it with a
        blocking :meth:`~SyncJobWorker.run` and stops it from any thread.
        """

        async def build() -> JobWorker:
            return self.runner.create_worker(concurrency=concurrency, queues=queues, **options)

        return SyncJobWorker(self._call(build()), self._loop)

    # -- transactional enqueue on a sync connection ----------------------------------------
    def _postgres(self) -> PostgresJobRunner:
        if not isinstance(self.runner, PostgresJobRunner):
            raise InvalidArgumentError("connection= is supported by the PostgreSQL backend only")
        return self.runner


class SyncJobWorker:
    """A :class:`JobWorker` driven from sync code: :meth:`run` blocks until :meth:`stop`.

    Returned by :meth:`SyncJobRunner.create_worker`. The async worker (``.worker``) runs on
    the sync runner's private loop; ``run()`` may be called from any thread but the loop's,
    and ``stop()`` from any other thread (a signal handler's or a web app's shutdown hook).
    """

    def __init__(self, worker: JobWorker, loop: asyncio.AbstractEventLoop) -> None:
        self.worker = worker
        self._loop = loop
        self.started = threading.Event()
        """Set once the worker is consuming (listening and ready to claim)."""

    def run(self) -> None:
        """Run until :meth:`stop` is called, then drain gracefully; returns when stopped.

        A ``KeyboardInterrupt`` in the calling thread stops the worker gracefully (running
        jobs get their grace, the rest are re-queued) and is raised again afterwards.
        """
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        try:
            future.result()
        except KeyboardInterrupt:
            self.stop()
            future.result()
            raise

    async def _serve(self) -> None:
        async def announce() -> None:
            await self.worker.started.wait()
            self.started.set()

        watcher = asyncio.get_running_loop().create_task(announce())
        try:
            await self.worker.run()
        finally:
            watcher.cancel()

    def stop(self, *, grace: float | None = None) -> None:
        """See :meth:`JobWorker.stop`: blocks until the worker stopped claiming and its
        running jobs finished within ``grace`` seconds (the rest re-queued)."""
        asyncio.run_coroutine_threadsafe(self.worker.stop(grace=grace), self._loop).result()
