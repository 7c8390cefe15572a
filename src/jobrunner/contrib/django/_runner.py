"""The project's runner, and enqueueing in the current Django transaction."""

from __future__ import annotations

import threading
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connections, transaction

from jobrunner._errors import ConfigurationError, InvalidArgumentError
from jobrunner._models import ScheduledJob
from jobrunner._sync import SyncJobRunner
from jobrunner.contrib.django._settings import DjangoConfig, read_config, runner_settings

T = TypeVar("T")

_lock = threading.Lock()
_config: DjangoConfig | None = None
_runner: SyncJobRunner | None = None


def config() -> DjangoConfig:
    """``settings.JOBRUNNER``, read and checked once (again after ``reset_runner``)."""
    global _config
    current = _config
    if current is None:
        current = _config = read_config()
    return current


def get_runner() -> SyncJobRunner:
    """The project's runner: a :class:`SyncJobRunner`, built on first use and kept.

    It is configured by ``settings.JOBRUNNER`` on the database of ``DATABASES[DATABASE]``
    and executes the handlers registered by the installed apps' ``jobs`` modules. Its calls
    block: in async views wrap them, ``await sync_to_async(get_runner().get_job_status)(...)``.

    Raises:
        ConfigurationError: the settings are invalid, or the jobrunner tables are missing or
            behind (run ``manage.py migrate``).
    """
    global _runner
    with _lock:
        if _runner is None:
            try:
                _runner = SyncJobRunner.from_factory(runner_settings(config()))
            except ConfigurationError as exc:
                if "migrat" in str(exc):
                    raise ConfigurationError(f"{exc} (in Django: manage.py migrate)") from exc
                raise
        return _runner


def reset_runner() -> None:
    """Close the project's runner and forget it and the settings (tests; settings changes)."""
    global _runner, _config
    with _lock:
        runner, _runner, _config = _runner, None, None
    if runner is not None:
        runner.close()


def run_on_runner_loop(runner: SyncJobRunner, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the loop that owns ``runner``'s async runner, blocking until done."""
    return runner._call(coro)


def enqueue_on_commit(
    name: str,
    data: Mapping[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    using: str | None = None,
    **options: Any,
) -> ScheduledJob:
    """Schedule a job inside the current Django transaction, through Django's connection.

    The job row is written by the same database connection and transaction as the view's
    other writes, so the job exists if and only if that transaction commits: inside
    ``transaction.atomic()`` or with ``ATOMIC_REQUESTS``, a rollback (an exception, or
    ``transaction.set_rollback(True)``) leaves no job behind, and a worker is woken at commit.
    Outside a transaction (autocommit) the job is written at once. The insert runs in a
    savepoint, so a failed insert leaves the caller's transaction usable.

    Args:
        name: The job name (a registered handler's, unless ``REQUIRE_REGISTERED`` is off).
        data: The job's JSON data.
        run_at: Run it at this (timezone-aware) time instead of now.
        using: Database alias to write through (default: ``JOBRUNNER["DATABASE"]``); it
            must hold the jobrunner tables.
        **options: ``tenant``, ``priority``, ``singleton_key``, ``user_id``, ``metadata``,
            ``queue``, as for :meth:`JobRunner.schedule_job`.

    Returns:
        The scheduled job (``created=False`` when a live job holds the singleton key).

    Raises:
        InvalidArgumentError: a malformed argument, an unknown ``using`` alias, or a backend
            that cannot enqueue in a database transaction (Temporal); nothing is written.
        ConfigurationError: the alias is not PostgreSQL with psycopg 3.
        django.core.exceptions.SynchronousOnlyOperation: called from async code; use
            :func:`aenqueue_on_commit`.
    """
    alias = config().database if using is None else using
    if not isinstance(alias, str) or alias not in django_settings.DATABASES:
        raise InvalidArgumentError(f"using must name an alias of settings.DATABASES, got {using!r}")
    runner = get_runner()
    with transaction.atomic(using=alias):
        connection = connections[alias]
        raw = connection.connection
        if not isinstance(raw, psycopg.Connection):
            raise ConfigurationError(
                f"enqueue_on_commit needs DATABASES[{alias!r}] to be PostgreSQL through "
                f"psycopg 3 (django.db.backends.postgresql with psycopg installed); its "
                f"connection is {type(raw).__module__}.{type(raw).__name__}"
            )
        if run_at is None:
            return runner.schedule_job(name, data, connection=raw, **options)
        return runner.schedule_job_at(name, data, run_at, connection=raw, **options)


async def aenqueue_on_commit(
    name: str,
    data: Mapping[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    using: str | None = None,
    **options: Any,
) -> ScheduledJob:
    """:func:`enqueue_on_commit` for async views.

    It runs in Django's thread-sensitive executor, on the same connection as the request's
    other ``sync_to_async`` database work. An async view has no transaction of its own: to
    tie the job to other writes, put them and :func:`enqueue_on_commit` in one sync function
    under ``transaction.atomic()`` and await it through ``sync_to_async``; called directly,
    the job is written at once (autocommit), like ``await Model.objects.acreate(...)``.
    """
    return await sync_to_async(enqueue_on_commit, thread_sensitive=True)(
        name, data, run_at=run_at, using=using, **options
    )
