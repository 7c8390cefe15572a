"""``settings.JOBRUNNER``: read, checked and turned into jobrunner :class:`Settings`.

The Django integration reads Django's settings only (not ``JOBRUNNER_*`` environment
variables): a project that wants the environment reads it in its settings module.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from jobrunner._config import RUNNER_ALIASES, Settings
from jobrunner._errors import ConfigurationError
from jobrunner._runner import ALL_TENANTS, AllTenants

_TOP_KEYS = frozenset(
    {
        "DATABASE",
        "DATABASE_URL",
        "SCHEMA",
        "RUNNER_TYPE",
        "AUTO_MIGRATE",
        "REQUIRE_REGISTERED",
        "POOL_SIZE",
        "TEMPORAL",
        "JOBS_MODULE",
        "DASHBOARD",
    }
)
_TEMPORAL_KEYS = {
    "ADDRESS": "temporal_address",
    "NAMESPACE": "temporal_namespace",
    "TASK_QUEUE": "temporal_task_queue",
    "TLS_CERT": "temporal_tls_cert",
    "TLS_KEY": "temporal_tls_key",
    "TLS_CA": "temporal_tls_ca",
}
_DASHBOARD_KEYS = frozenset({"PERMISSION", "TENANT", "READ_ONLY", "TITLE", "REFRESH_SECONDS"})
DEFAULT_PERMISSION = "jobrunner.contrib.django.dashboard.staff_only"

# Connection parameters Django passes to psycopg that are not libpq options.
_NOT_LIBPQ = frozenset({"cursor_factory", "context", "prepare_threshold", "row_factory"})


@dataclass(frozen=True)
class DashboardConfig:
    """``JOBRUNNER["DASHBOARD"]``: who may see the dashboard and what."""

    permission: Callable[[Any], Any]
    """``PERMISSION``: ``(request) -> bool`` for an authenticated user (default: active staff)."""
    tenant: Callable[[Any], Any] | uuid.UUID | AllTenants
    """``TENANT``: ``(request) -> tenant | ALL_TENANTS | None`` or a fixed tenant (default:
    ``ALL_TENANTS``); ``None`` from the callable answers 403."""
    read_only: Callable[[Any], Any] | bool
    """``READ_ONLY``: ``True`` or ``(request) -> bool`` (default ``False``)."""
    title: str
    refresh_seconds: float


@dataclass(frozen=True)
class DjangoConfig:
    """Everything ``settings.JOBRUNNER`` says, checked."""

    database: str
    """``DATABASE``: alias in ``DATABASES`` holding the jobrunner tables (default ``default``);
    ``enqueue_on_commit`` writes through this connection unless given ``using=``."""
    database_url: str | None
    """``DATABASE_URL``: an explicit URL instead of the alias's connection parameters."""
    settings: Settings
    """The runner settings, without the database URL (resolved when a runner is built)."""
    jobs_module: str | None
    """``JOBS_MODULE``: module imported from every installed app (default ``jobs``)."""
    dashboard: DashboardConfig


def _problem(key: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"settings.JOBRUNNER[{key!r}] {message}")


def _mapping(raw: object, key: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _problem(key, f"must be a dict, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise _problem(key, f"has unknown keys {unknown}; known: {sorted(allowed)}")
    return raw


def _text(raw: object, key: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _problem(key, f"must be a non-empty string, got {raw!r}")
    return raw


def _optional_text(raw: object, key: str) -> str | None:
    return None if raw is None else _text(raw, key)


def _callable(raw: object, key: str) -> Callable[[Any], Any]:
    if isinstance(raw, str):
        try:
            raw = import_string(raw)
        except ImportError as exc:
            raise _problem(key, f"cannot be imported: {exc}") from exc
    if not callable(raw):
        raise _problem(key, f"must be a callable or its dotted path, got {raw!r}")
    return raw


def _dashboard(raw: object) -> DashboardConfig:
    values = _mapping(raw, "DASHBOARD", _DASHBOARD_KEYS)
    tenant_raw = values.get("TENANT", ALL_TENANTS)
    tenant: Callable[[Any], Any] | uuid.UUID | AllTenants
    if isinstance(tenant_raw, AllTenants | uuid.UUID):
        tenant = tenant_raw
    elif isinstance(tenant_raw, str) and _is_uuid(tenant_raw):
        tenant = uuid.UUID(tenant_raw)
    else:
        tenant = _callable(tenant_raw, "DASHBOARD.TENANT")
    read_only_raw = values.get("READ_ONLY", False)
    read_only = (
        read_only_raw
        if isinstance(read_only_raw, bool)
        else _callable(read_only_raw, "DASHBOARD.READ_ONLY")
    )
    refresh = values.get("REFRESH_SECONDS", 5.0)
    if isinstance(refresh, bool) or not isinstance(refresh, int | float):
        raise _problem("DASHBOARD.REFRESH_SECONDS", f"must be a number, got {refresh!r}")
    title = _text(values.get("TITLE", "jobrunner"), "DASHBOARD.TITLE")
    return DashboardConfig(
        permission=_callable(values.get("PERMISSION", DEFAULT_PERMISSION), "DASHBOARD.PERMISSION"),
        tenant=tenant,
        read_only=read_only,
        title=title,
        refresh_seconds=float(refresh),
    )


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def read_config() -> DjangoConfig:
    """Read and check ``settings.JOBRUNNER`` (every key optional).

    Raises:
        ConfigurationError: a key is unknown or a value is malformed; the message names it.
    """
    values = _mapping(getattr(django_settings, "JOBRUNNER", None), "JOBRUNNER", _TOP_KEYS)
    database = _text(values.get("DATABASE", "default"), "DATABASE")
    if database not in django_settings.DATABASES:
        raise _problem("DATABASE", f"names {database!r}, which is not in settings.DATABASES")
    database_url = _optional_text(values.get("DATABASE_URL"), "DATABASE_URL")
    schema = _text(values.get("SCHEMA", "jobrunner"), "SCHEMA")
    raw_type = values.get("RUNNER_TYPE", "postgres")
    runner_type = RUNNER_ALIASES.get(str(raw_type).strip().lower()) if raw_type else None
    if runner_type is None:
        raise _problem("RUNNER_TYPE", f"must be postgres, temporal or memory, got {raw_type!r}")
    auto_migrate = values.get("AUTO_MIGRATE", "check")
    if auto_migrate not in (True, False, "check"):
        raise _problem("AUTO_MIGRATE", f"must be True, False or 'check', got {auto_migrate!r}")
    require_registered = values.get("REQUIRE_REGISTERED", True)
    if not isinstance(require_registered, bool):
        raise _problem("REQUIRE_REGISTERED", f"must be True or False, got {require_registered!r}")
    pool_size = values.get("POOL_SIZE", Settings.pool_max_size)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise _problem("POOL_SIZE", f"must be an integer of at least 1, got {pool_size!r}")
    temporal = _mapping(
        values.get("TEMPORAL"), "TEMPORAL", frozenset({*_TEMPORAL_KEYS, "FALLBACK_TO_POSTGRES"})
    )
    changes: dict[str, Any] = {"auto_migrate": auto_migrate}
    for key, field_name in _TEMPORAL_KEYS.items():
        if key in temporal:
            changes[field_name] = _text(temporal[key], f"TEMPORAL.{key}")
    fallback = temporal.get("FALLBACK_TO_POSTGRES", True)
    if not isinstance(fallback, bool):
        raise _problem("TEMPORAL.FALLBACK_TO_POSTGRES", f"must be True or False, got {fallback!r}")
    jobs_module = _optional_text(values.get("JOBS_MODULE", "jobs"), "JOBS_MODULE")
    runner_settings = dataclasses.replace(
        Settings(),
        runner_type=runner_type,
        schema=schema,
        require_registered=require_registered,
        fallback_to_postgres=fallback,
        pool_max_size=pool_size,
        **changes,
    )
    return DjangoConfig(
        database=database,
        database_url=database_url,
        settings=runner_settings,
        jobs_module=jobs_module,
        dashboard=_dashboard(values.get("DASHBOARD")),
    )


def database_url(config: DjangoConfig) -> str:
    """The libpq connection string of the jobrunner database.

    ``DATABASE_URL`` when set, else the connection parameters Django itself uses for the
    alias (``NAME``, ``USER``, ``PASSWORD``, ``HOST``, ``PORT`` and libpq ``OPTIONS``), read
    when called: under test runners this is the test database.

    Raises:
        ConfigurationError: the alias is not a PostgreSQL database.
    """
    if config.database_url is not None:
        return config.database_url
    from django.db import connections
    from psycopg.conninfo import make_conninfo

    alias = config.database
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ConfigurationError(
            f"DATABASES[{alias!r}] uses the {connection.vendor} backend; jobrunner needs "
            "django.db.backends.postgresql (or set JOBRUNNER['DATABASE_URL'])"
        )
    params = {
        key: str(value)
        for key, value in connection.get_connection_params().items()
        if key not in _NOT_LIBPQ and isinstance(value, str | int) and value is not None
    }
    return make_conninfo("", **params)


def runner_settings(config: DjangoConfig | None = None) -> Settings:
    """The jobrunner :class:`Settings` this Django project describes, database included."""
    config = config or read_config()
    if config.settings.runner_type == "memory":
        return config.settings
    return dataclasses.replace(config.settings, database_url=database_url(config))
