"""The seed's legacy ``JobScheduler`` API, thin over the runner."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobrunner._runner import JobRunner


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

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    @classmethod
    async def get_instance(cls) -> JobScheduler:
        """The scheduler over ``JobRunnerFactory.get_instance()``."""
        from jobrunner._factory import JobRunnerFactory

        runner = await JobRunnerFactory.get_instance()
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
