"""The Temporal backend (``pip install 'jobrunner-pg[temporal]'``).

``JOB_RUNNER_TYPE=temporal`` makes :class:`~jobrunner.JobRunnerFactory` build a
:class:`TemporalJobRunner` through :func:`create_from_settings`.
"""

from __future__ import annotations

from jobrunner._config import Settings
from jobrunner._errors import ConfigurationError
from jobrunner.backends.temporal._client import DEFAULT_CONNECT_TIMEOUT, connect, tls_config
from jobrunner.backends.temporal._inputs import workflow_id
from jobrunner.backends.temporal._runner import TemporalJobRunner
from jobrunner.backends.temporal._worker import TemporalWorker, TemporalWorkerSettings
from jobrunner.registry import JobHandlerRegistry

__all__ = [
    "TemporalJobRunner",
    "TemporalWorker",
    "TemporalWorkerSettings",
    "create_from_settings",
    "workflow_id",
]


async def create_from_settings(
    settings: Settings, *, registry: JobHandlerRegistry | None = None
) -> TemporalJobRunner:
    """Build and start a Temporal runner from :class:`~jobrunner._config.Settings`.

    Temporal is contacted first, with a short timeout (``JOBRUNNER_TEMPORAL_CONNECT_TIMEOUT``,
    default 5 s), so the factory can fall back to PostgreSQL quickly.

    Raises:
        UnavailableError: Temporal did not answer; the message names the address.
        ConfigurationError: no database URL, or unreadable TLS files.
    """
    dsn = settings.require_database_url()
    extra = settings.extra
    timeout = _float(extra.get("JOBRUNNER_TEMPORAL_CONNECT_TIMEOUT"), DEFAULT_CONNECT_TIMEOUT)
    heartbeat = _float(extra.get("JOBRUNNER_TEMPORAL_HEARTBEAT_TIMEOUT"), 30.0)
    client = await connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls_config(
            settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_ca
        ),
        timeout=timeout,
    )
    runner = TemporalJobRunner(
        dsn,
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        task_queue=settings.temporal_task_queue,
        client=client,
        schema=settings.schema,
        registry=registry,
        require_registered=settings.require_registered,
        auto_migrate=settings.auto_migrate,
        pool_size=settings.pool_max_size,
        heartbeat_timeout=heartbeat,
        connect_timeout=timeout,
    )
    await runner.start()
    return runner


def _float(raw: str | None, default: float) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"expected a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"expected a positive number of seconds, got {raw!r}")
    return value
