"""The seed's names, kept working; nothing else in jobrunner uses them.

The system jobrunner replaces (pg-boss behind a ``JobScheduler`` facade) named things its own
way. Those names stay accepted, all of them declared here:

* :class:`JobScheduler`, the legacy facade (``await JobScheduler.get_instance()``), also
  exported from ``jobrunner``;
* ``runner.get_runner_type()`` (the seed's ``getRunnerType()``) on every runner, async and
  sync, from :class:`SeedRunnerNames`;
* ``pgboss`` / ``pg-boss`` for ``JOB_RUNNER_TYPE`` (:data:`SEED_RUNNER_TYPES`) and
  ``JOB_RUNNER_FALLBACK_TO_PGBOSS`` for the Temporal fallback (:data:`SEED_FALLBACK_VARIABLE`).

This module depends on nothing but the models and the options types, so the core (the
runners, the settings) can take these names from it. :class:`JobScheduler` reaches the
process-wide runner through :func:`use_process_runner`, which
:class:`~jobrunner.JobRunnerFactory` calls with its ``get_instance`` when it is defined.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Final, Protocol, Unpack

from jobrunner._errors import ConfigurationError
from jobrunner._models import ScheduledJob
from jobrunner._options import EnqueueOptions, RecurringOptions

__all__ = [
    "SEED_FALLBACK_VARIABLE",
    "SEED_RUNNER_TYPES",
    "JobScheduler",
    "SeedRunnerNames",
    "use_process_runner",
]

#: ``JOB_RUNNER_TYPE`` values of the seed, and the backend each names.
SEED_RUNNER_TYPES: Final = {"pgboss": "postgres", "pg-boss": "postgres"}

#: The seed's name of the fallback switch (``JOB_RUNNER_FALLBACK_TO_POSTGRES`` is jobrunner's).
SEED_FALLBACK_VARIABLE: Final = "JOB_RUNNER_FALLBACK_TO_PGBOSS"


class _NamedRunner(Protocol):
    @property
    def runner_type(self) -> str:
        """``"postgres"``, ``"temporal"`` or ``"memory"``."""


class SeedRunnerNames:
    """The seed's accessor names on a runner (mixed into every runner, async and sync)."""

    def get_runner_type(self: _NamedRunner) -> str:
        """The backend's name (``runner_type``), as the seed's ``getRunnerType()``."""
        return self.runner_type


class SeedRunner(Protocol):
    """What :class:`JobScheduler` calls on a runner (every :class:`~jobrunner.JobRunner`)."""

    async def schedule_job(
        self, name: str, data: Mapping[str, Any] | None = None, **options: Unpack[EnqueueOptions]
    ) -> ScheduledJob:
        """See :meth:`jobrunner.JobRunner.schedule_job`."""

    async def schedule_job_at(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        run_at: datetime,
        **options: Unpack[EnqueueOptions],
    ) -> ScheduledJob:
        """See :meth:`jobrunner.JobRunner.schedule_job_at`."""

    async def schedule_recurring_job(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        expression: str,
        **options: Unpack[RecurringOptions],
    ) -> ScheduledJob:
        """See :meth:`jobrunner.JobRunner.schedule_recurring_job`."""


def _tenant_of(data: Mapping[str, Any] | None) -> Any:
    if not data:
        return None
    return data.get("tenant_id", data.get("tenantId"))


class JobScheduler:
    """Backward-compatible facade: ``scheduler = await JobScheduler.get_instance()``.

    The tenant comes from ``data["tenant_id"]`` or ``data["tenantId"]`` (system tenant when
    absent), as in the seed.
    """

    _instance: JobScheduler | None = None
    _process_runner: ClassVar[Callable[[], Awaitable[SeedRunner]] | None] = None

    def __init__(self, runner: SeedRunner) -> None:
        self.runner = runner

    @classmethod
    async def get_instance(cls) -> JobScheduler:
        """The scheduler over ``JobRunnerFactory.get_instance()``."""
        if cls._process_runner is None:
            raise ConfigurationError("no process-wide runner: import jobrunner first")
        runner = await cls._process_runner()
        if cls._instance is None or cls._instance.runner is not runner:
            cls._instance = cls(runner)
        return cls._instance

    async def schedule_immediate_job(
        self, name: str, data: Mapping[str, Any] | None = None
    ) -> uuid.UUID:
        """Enqueue now; returns the job id."""
        handle = await self.runner.schedule_job(name, data, tenant=_tenant_of(data))
        return handle.job_id

    async def schedule_scheduled_job(
        self, name: str, run_at: datetime, data: Mapping[str, Any] | None = None
    ) -> uuid.UUID:
        """Enqueue for ``run_at``; returns the job id."""
        handle = await self.runner.schedule_job_at(name, data, run_at, tenant=_tenant_of(data))
        return handle.job_id

    async def schedule_recurring_job(
        self, name: str, interval: str, data: Mapping[str, Any] | None = None
    ) -> uuid.UUID:
        """Create or update a recurring schedule (cron or interval); returns its tracker id."""
        handle = await self.runner.schedule_recurring_job(
            name, data, interval, tenant=_tenant_of(data)
        )
        return handle.job_id


def use_process_runner(source: Callable[[], Awaitable[SeedRunner]]) -> None:
    """Make :meth:`JobScheduler.get_instance` wrap the runner ``source`` returns (the
    factory's process-wide one)."""
    JobScheduler._process_runner = source
