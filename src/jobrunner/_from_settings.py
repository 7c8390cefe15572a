"""The runner a :class:`~jobrunner._config.Settings` describes, built and started.

The one place that knows every backend: :class:`~jobrunner.JobRunnerFactory` (the
process-wide runner) and :meth:`~jobrunner.SyncJobRunner.from_factory` both build through
:func:`runner_from_settings`. The Temporal backend is an optional extra, imported only when
asked for.
"""

from __future__ import annotations

import logging

from jobrunner._config import Settings
from jobrunner._errors import UnavailableError
from jobrunner._runner import JobRunner
from jobrunner.backends.memory import InMemoryJobRunner
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.registry import JobHandlerRegistry

__all__ = ["runner_from_settings"]

logger = logging.getLogger("jobrunner.factory")


async def runner_from_settings(
    settings: Settings | None = None, *, registry: JobHandlerRegistry | None = None
) -> JobRunner:
    """Build and start the runner ``settings`` (default: the environment's) asks for.

    ``JOB_RUNNER_TYPE=temporal`` falls back to PostgreSQL when Temporal is unreachable and
    ``fallback_to_postgres`` is set (logged as a warning).

    Raises:
        UnavailableError: the backend cannot be reached (or the Temporal extra is missing).
        ConfigurationError: the settings are incomplete (no database URL).
    """
    settings = settings or Settings.from_env()
    if settings.runner_type == "memory":
        memory = InMemoryJobRunner(registry=registry)
        await memory.start()
        return memory
    if settings.runner_type == "temporal":
        try:
            from jobrunner.backends.temporal import create_from_settings
        except ImportError as exc:
            raise UnavailableError(
                "JOB_RUNNER_TYPE=temporal needs the extra: pip install 'jobrunner-pg[temporal]'"
            ) from exc
        try:
            return await create_from_settings(settings, registry=registry)
        except UnavailableError as exc:
            if not settings.fallback_to_postgres:
                raise
            logger.warning(
                "Temporal at %s is unreachable (%s); falling back to the PostgreSQL backend "
                "(JOB_RUNNER_FALLBACK_TO_PGBOSS=true): jobs scheduled now go to the "
                "PostgreSQL queue, which Temporal workers run too unless started with "
                "--no-postgres-queue",
                settings.temporal_address,
                exc,
            )
    runner = PostgresJobRunner(
        settings.require_database_url(),
        schema=settings.schema,
        registry=registry,
        require_registered=settings.require_registered,
        auto_migrate=settings.auto_migrate,
        pool_size=settings.pool_max_size,
    )
    await runner.start()
    return runner
