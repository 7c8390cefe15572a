"""Settings read from the environment (the seed's variables plus jobrunner's own)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from jobrunner._errors import ConfigurationError
from jobrunner.compat import SEED_FALLBACK_VARIABLE, SEED_RUNNER_TYPES

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: ``JOB_RUNNER_TYPE`` values and the backend each names (the seed's among them).
RUNNER_ALIASES = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "temporal": "temporal",
    "memory": "memory",
    **SEED_RUNNER_TYPES,
}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _auto_migrate(env: Mapping[str, str]) -> bool | Literal["check"]:
    raw = env.get("JOBRUNNER_AUTO_MIGRATE")
    if raw is not None and raw.strip().lower() == "check":
        return "check"
    try:
        return _flag(env, "JOBRUNNER_AUTO_MIGRATE", True)
    except ConfigurationError:
        raise ConfigurationError(
            f"JOBRUNNER_AUTO_MIGRATE must be true, false or check, got {raw!r}"
        ) from None


@dataclass(frozen=True)
class Settings:
    """Everything the factory needs to build a runner."""

    runner_type: str = "postgres"
    """``JOB_RUNNER_TYPE``: ``postgres`` (alias ``pgboss``), ``temporal`` or ``memory``."""
    database_url: str | None = None
    """``JOBRUNNER_DATABASE_URL``, else ``DATABASE_URL``."""
    schema: str = "jobrunner"
    """``JOBRUNNER_SCHEMA``: schema of the jobrunner tables."""
    auto_migrate: bool | Literal["check"] = True
    """``JOBRUNNER_AUTO_MIGRATE``: apply migrations when a runner starts (``true``), only
    check that the schema exists and is current (``check``), or neither (``false``)."""
    require_registered: bool = True
    """``JOBRUNNER_REQUIRE_REGISTERED``: refuse to schedule names with no local handler."""
    fallback_to_postgres: bool = True
    """``JOB_RUNNER_FALLBACK_TO_PGBOSS`` / ``JOB_RUNNER_FALLBACK_TO_POSTGRES``."""
    temporal_address: str = "localhost:7233"
    """``TEMPORAL_ADDRESS``."""
    temporal_namespace: str = "default"
    """``TEMPORAL_NAMESPACE``."""
    temporal_task_queue: str = "jobrunner-jobs"
    """``TEMPORAL_JOB_TASK_QUEUE``."""
    temporal_tls_cert: str | None = None
    """``TEMPORAL_TLS_CERT``: path of the client certificate (PEM)."""
    temporal_tls_key: str | None = None
    """``TEMPORAL_TLS_KEY``: path of the client key (PEM)."""
    temporal_tls_ca: str | None = None
    """``TEMPORAL_TLS_CA``: path of the server root CA (PEM)."""
    pool_max_size: int = 10
    """``JOBRUNNER_POOL_SIZE``: connections per runner pool."""
    extra: dict[str, str] = field(default_factory=dict)
    """Other ``JOBRUNNER_*`` variables, for backends and extensions."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env
        raw_type = env.get("JOB_RUNNER_TYPE", "postgres").strip().lower() or "postgres"
        try:
            runner_type = RUNNER_ALIASES[raw_type]
        except KeyError:
            raise ConfigurationError(
                "JOB_RUNNER_TYPE must be one of postgres, pgboss, temporal, memory; "
                f"got {raw_type!r}"
            ) from None
        fallback_name = (
            "JOB_RUNNER_FALLBACK_TO_POSTGRES"
            if "JOB_RUNNER_FALLBACK_TO_POSTGRES" in env
            else SEED_FALLBACK_VARIABLE
        )
        try:
            pool = int(env.get("JOBRUNNER_POOL_SIZE", "10"))
        except ValueError:
            raise ConfigurationError("JOBRUNNER_POOL_SIZE must be an integer") from None
        if pool < 1:
            raise ConfigurationError("JOBRUNNER_POOL_SIZE must be at least 1")
        return cls(
            runner_type=runner_type,
            database_url=env.get("JOBRUNNER_DATABASE_URL") or env.get("DATABASE_URL") or None,
            schema=env.get("JOBRUNNER_SCHEMA", "jobrunner") or "jobrunner",
            auto_migrate=_auto_migrate(env),
            require_registered=_flag(env, "JOBRUNNER_REQUIRE_REGISTERED", True),
            fallback_to_postgres=_flag(env, fallback_name, True),
            temporal_address=env.get("TEMPORAL_ADDRESS", "localhost:7233"),
            temporal_namespace=env.get("TEMPORAL_NAMESPACE", "default"),
            temporal_task_queue=env.get("TEMPORAL_JOB_TASK_QUEUE", "jobrunner-jobs"),
            temporal_tls_cert=env.get("TEMPORAL_TLS_CERT") or None,
            temporal_tls_key=env.get("TEMPORAL_TLS_KEY") or None,
            temporal_tls_ca=env.get("TEMPORAL_TLS_CA") or None,
            pool_max_size=pool,
            extra={k: v for k, v in env.items() if k.startswith("JOBRUNNER_")},
        )

    def require_database_url(self) -> str:
        """The database URL, or a clear error naming the variables to set."""
        if not self.database_url:
            raise ConfigurationError(
                "no database configured: set JOBRUNNER_DATABASE_URL (or DATABASE_URL)"
            )
        return self.database_url
