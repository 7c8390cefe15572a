"""SyncJobRunner: the runner API as blocking calls, for sync host code.

The async runner lives on a private event loop in a daemon thread; each method hands its
coroutine to that loop and waits. A ``connection=`` argument must then be a sync
``psycopg.Connection``: the job is written with it in the caller's thread and transaction.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row

from jobrunner._config import Settings
from jobrunner._db._errors import translate_errors
from jobrunner._db._savepoint import caller_savepoint_sync
from jobrunner._errors import InvalidArgumentError, JobTimeoutError, UnknownOptionError
from jobrunner._models import JobDetails, JobInfo, JobPage, Metrics, ScheduledJob, ScheduleInfo
from jobrunner._runner import JobRunner, wait_timeout_message

T = TypeVar("T")


class SyncJobRunner:
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
        from jobrunner._factory import JobRunnerFactory

        return cls(lambda: JobRunnerFactory.create(settings))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def runner_type(self) -> str:
        """The wrapped backend's name."""
        return self.runner.runner_type

    @property
    def flow(self) -> Any:
        """Blocking twin of ``PostgresJobRunner.flow`` (fairness and flow control)."""
        from jobrunner.backends.postgres._flow import SyncFlowControl

        flow = getattr(self.runner, "flow", None)
        if flow is None:
            from jobrunner._errors import ConfigurationError

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
    def is_healthy(self) -> bool:
        """See :meth:`JobRunner.is_healthy`."""
        return self._call(self.runner.is_healthy())

    def schedule_job(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> ScheduledJob:
        """See :meth:`JobRunner.schedule_job`; ``connection`` is a sync psycopg connection."""
        if connection is not None:
            return self._insert_with(connection, name, data, None, options)
        _check_options("schedule_job", options, _SINGLE_OPTIONS)
        return self._call(self.runner.schedule_job(name, data, **options))

    def schedule_job_at(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime,
        *,
        connection: Any = None,
        **options: Any,
    ) -> ScheduledJob:
        """See :meth:`JobRunner.schedule_job_at`."""
        if connection is not None:
            from jobrunner._validation import as_aware_datetime

            return self._insert_with(connection, name, data, as_aware_datetime(run_at), options)
        _check_options("schedule_job_at", options, _SINGLE_OPTIONS)
        return self._call(self.runner.schedule_job_at(name, data, run_at, **options))

    def schedule_jobs(
        self,
        name: str,
        data: Iterable[Mapping[str, Any] | None],
        *,
        connection: Any = None,
        **options: Any,
    ) -> list[ScheduledJob]:
        """See :meth:`JobRunner.schedule_jobs`."""
        if connection is not None:
            _check_options("schedule_jobs", options, _BULK_OPTIONS)
            pg = self._postgres()
            conn = _sync_connection(connection)
            base, ids, payloads = pg.prepare_bulk(
                name,
                data,
                tenant=options.get("tenant"),
                priority=options.get("priority", 0),
                run_at=options.get("run_at"),
                user_id=options.get("user_id"),
                metadata=options.get("metadata"),
                queue=options.get("queue"),
            )
            with translate_errors(), caller_savepoint_sync(conn, pg.db.queries):
                for start in range(0, len(ids), 1000):
                    params = dict(
                        base,
                        job_ids=ids[start : start + 1000],
                        datas=payloads[start : start + 1000],
                    )
                    conn.execute(pg.db.queries.insert_jobs_bulk, params)
            return [ScheduledJob(job_id=i, external_id=str(i), tenant=base["tenant"]) for i in ids]
        _check_options("schedule_jobs", options, _BULK_OPTIONS)
        return self._call(self.runner.schedule_jobs(name, data, **options))

    def schedule_recurring_job(
        self, name: str, data: Mapping[str, Any] | None, expression: str, **options: Any
    ) -> ScheduledJob:
        """See :meth:`JobRunner.schedule_recurring_job`."""
        return self._call(self.runner.schedule_recurring_job(name, data, expression, **options))

    def list_schedules(self, **options: Any) -> list[ScheduleInfo]:
        """See :meth:`JobRunner.list_schedules`."""
        return self._call(self.runner.list_schedules(**options))

    def pause_schedule(self, job_id: uuid.UUID | str, **options: Any) -> bool:
        """See :meth:`JobRunner.pause_schedule`."""
        return self._call(self.runner.pause_schedule(job_id, **options))

    def resume_schedule(self, job_id: uuid.UUID | str, **options: Any) -> bool:
        """See :meth:`JobRunner.resume_schedule`."""
        return self._call(self.runner.resume_schedule(job_id, **options))

    def get_job_status(self, job_id: uuid.UUID | str, **options: Any) -> JobInfo | None:
        """See :meth:`JobRunner.get_job_status`."""
        return self._call(self.runner.get_job_status(job_id, **options))

    def cancel_job(self, job_id: uuid.UUID | str, **options: Any) -> bool:
        """See :meth:`JobRunner.cancel_job`."""
        return self._call(self.runner.cancel_job(job_id, **options))

    def retry_job(self, job_id: uuid.UUID | str, **options: Any) -> bool:
        """See :meth:`JobRunner.retry_job`."""
        return self._call(self.runner.retry_job(job_id, **options))

    def get_job_details(self, job_id: uuid.UUID | str, **options: Any) -> JobDetails | None:
        """See :meth:`JobRunner.get_job_details`."""
        return self._call(self.runner.get_job_details(job_id, **options))

    def list_jobs(self, **options: Any) -> JobPage:
        """See :meth:`JobRunner.list_jobs`."""
        return self._call(self.runner.list_jobs(**options))

    def get_metrics(self, **options: Any) -> Metrics:
        """See :meth:`JobRunner.get_metrics`."""
        return self._call(self.runner.get_metrics(**options))

    def clear_history(self, **options: Any) -> int:
        """See :meth:`JobRunner.clear_history`."""
        return self._call(self.runner.clear_history(**options))

    def wait_for_job(self, job_id: uuid.UUID | str, **options: Any) -> JobInfo:
        """See :meth:`JobRunner.wait_for_job`.

        Raises:
            JobTimeoutError: ``timeout`` seconds passed first (also a ``TimeoutError``).
        """
        try:
            return self._call(self.runner.wait_for_job(job_id, **options))
        except TimeoutError as exc:
            if isinstance(exc, JobTimeoutError):
                raise
            raise JobTimeoutError(wait_timeout_message(job_id, options.get("timeout"))) from exc

    # -- transactional enqueue on a sync connection ----------------------------------------
    def _postgres(self) -> Any:
        from jobrunner.backends.postgres import PostgresJobRunner

        if not isinstance(self.runner, PostgresJobRunner):
            raise InvalidArgumentError("connection= is supported by the PostgreSQL backend only")
        return self.runner

    def _insert_with(
        self,
        connection: Any,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime | None,
        options: dict[str, Any],
    ) -> ScheduledJob:
        pg = self._postgres()
        conn = _sync_connection(connection)
        _check_options("schedule_job", options, _SINGLE_OPTIONS)
        params = pg.prepare_insert(
            name,
            data,
            run_at,
            tenant=options.get("tenant"),
            priority=options.get("priority", 0),
            singleton_key=options.get("singleton_key"),
            user_id=options.get("user_id"),
            metadata=options.get("metadata"),
            queue=options.get("queue"),
        )
        existing = None
        with translate_errors(), caller_savepoint_sync(conn, pg.db.queries):
            # Tuple rows whatever row factory the caller's connection uses.
            cur = conn.cursor(row_factory=tuple_row)
            row = cur.execute(pg.db.queries.insert_job, params).fetchone()
            if row is None and params["singleton_key"] is not None:
                existing = cur.execute(pg.db.queries.find_singleton, params).fetchone()
        if existing is not None:
            return ScheduledJob(
                job_id=existing[0],
                external_id=str(existing[0]),
                tenant=params["tenant"],
                created=False,
            )
        if row is None:
            return self._insert_with(connection, name, data, run_at, options)
        return ScheduledJob(job_id=row[0], external_id=str(row[0]), tenant=params["tenant"])


_SINGLE_OPTIONS = frozenset({"tenant", "priority", "singleton_key", "user_id", "metadata", "queue"})
_BULK_OPTIONS = frozenset({"tenant", "priority", "run_at", "user_id", "metadata", "queue"})


def _check_options(method: str, options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    # A typed error that is also the TypeError Python raises for an unexpected keyword.
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UnknownOptionError(
            f"{method}() got unexpected keyword arguments: {', '.join(unknown)}"
        )


def _sync_connection(connection: Any) -> psycopg.Connection[Any]:
    if not isinstance(connection, psycopg.Connection):
        raise InvalidArgumentError("connection must be an open sync psycopg.Connection")
    return connection
