"""The scheduling options, declared once for every runner.

The abstract :class:`~jobrunner.JobRunner`, each backend and the blocking
:class:`~jobrunner.SyncJobRunner` take them as ``**options: Unpack[EnqueueOptions]`` (and
so on), so a type checker sees the same names and types everywhere. A keyword that no option
declares raises :class:`~jobrunner.UnknownOptionError` (:func:`checked_options`), the
defaults are the constants below, and :mod:`jobrunner._jobargs` validates the values.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, ParamSpec, TypedDict, TypeVar, Unpack, cast, get_args

from jobrunner._errors import UnknownOptionError
from jobrunner._models import MissedTickPolicy, OverlapPolicy

__all__ = [
    "DEFAULT_MAX_CATCH_UP",
    "DEFAULT_MISSED_TICKS",
    "DEFAULT_OVERLAP",
    "DEFAULT_PRIORITY",
    "DEFAULT_TIMEZONE",
    "BulkOptions",
    "DependencyOptions",
    "EnqueueOptions",
    "JobOptions",
    "RecurringOptions",
    "TenantArg",
    "checked_options",
    "option_names",
]

#: A tenant as callers give it: a UUID, its string form, or ``None`` for the system tenant.
TenantArg = uuid.UUID | str | None

DEFAULT_PRIORITY: Final = 0
DEFAULT_TIMEZONE: Final = "UTC"
DEFAULT_MISSED_TICKS: Final = MissedTickPolicy.LATEST
DEFAULT_OVERLAP: Final = OverlapPolicy.ALLOW
DEFAULT_MAX_CATCH_UP: Final = 10


class JobOptions(TypedDict, total=False):
    """What every enqueue takes: one job, a batch, or a schedule's jobs."""

    tenant: TenantArg
    """Owner of the job (default: the system tenant)."""
    priority: int
    """Higher runs first within a queue (default ``0``)."""
    user_id: uuid.UUID | str | None
    """Who asked for it, stored in ``jobs.user_id`` (default: the system user)."""
    metadata: Mapping[str, Any] | None
    """Free-form JSON stored with the job."""
    queue: str | None
    """Overrides the handler's queue."""


class DependencyOptions(TypedDict, total=False):
    """What a job with dependencies takes (``schedule_job``, ``schedule_job_at``,
    ``schedule_jobs``)."""

    depends_on: Iterable[uuid.UUID | str] | None
    """Ids of jobs of the same tenant this job waits for: it is ``waiting`` until every one
    has completed, then queued (docs/howto/steps-and-dependencies.md)."""
    on_dependency_failure: Literal["cancel", "run"]
    """What a failed or cancelled dependency does: ``"cancel"`` this job (default, naming
    the dependency in the reason) or ``"run"`` it anyway."""


class EnqueueOptions(JobOptions, DependencyOptions, total=False):
    """``schedule_job`` and ``schedule_job_at``."""

    singleton_key: str | None
    """At most one live job per key and tenant; a second enqueue returns the first."""
    connection: Any
    """The caller's open psycopg connection (async for async runners, sync for the sync
    runner; PostgreSQL only): the job is written in its current transaction."""


class BulkOptions(JobOptions, DependencyOptions, total=False):
    """``schedule_jobs``."""

    run_at: datetime | None
    """When every job of the batch falls due (timezone-aware; default now)."""
    connection: Any
    """As :attr:`EnqueueOptions.connection`."""


class RecurringOptions(JobOptions, total=False):
    """``schedule_recurring_job``."""

    timezone: str
    """IANA zone the expression is read in (default ``"UTC"``)."""
    singleton_key: str | None
    """Identity of the schedule (default ``<name>:<tenant>``): the same key updates it."""
    missed_ticks: MissedTickPolicy | str
    """What ticks missed while nothing ran do (default ``latest``)."""
    overlap: OverlapPolicy | str
    """What a tick does while the previous tick's job is live (default ``allow``)."""
    max_catch_up: int
    """Most missed ticks run with ``missed_ticks="all"`` (default ``10``)."""
    depends_on_previous: bool
    """A tick's job waits (``waiting``) until the previous tick's job of the schedule is
    final (default ``False``)."""


def option_names(options: type) -> frozenset[str]:
    """The keys an options ``TypedDict`` declares."""
    declared: frozenset[str] = options.__required_keys__ | options.__optional_keys__  # type: ignore[attr-defined]
    return declared


P = ParamSpec("P")
R = TypeVar("R")


def checked_options(method: Callable[P, R]) -> Callable[P, R]:
    """Refuse a keyword ``method`` does not take with :class:`UnknownOptionError`.

    The keywords taken are the method's named parameters plus, for ``**options:
    Unpack[X]``, the keys ``X`` declares. The error is an ``InvalidArgumentError`` and also
    the ``TypeError`` Python raises for an unexpected keyword; it is raised before the method
    runs (for a coroutine function, when it is awaited). The signature shown
    (``inspect.signature``, IDEs, type checkers) stays the method's own.
    """
    accepted = _accepted_keywords(method)
    name = method.__name__

    def check(keywords: Mapping[str, object]) -> None:
        unknown = sorted(set(keywords) - accepted)
        if unknown:
            raise UnknownOptionError(
                f"{name}() got unexpected keyword arguments: {', '.join(unknown)}"
            )

    if inspect.iscoroutinefunction(method):
        coroutine = method

        @functools.wraps(method)
        async def checked_coroutine(*args: P.args, **kwargs: P.kwargs) -> Any:
            check(kwargs)
            return await coroutine(*args, **kwargs)

        return cast(Callable[P, R], checked_coroutine)

    @functools.wraps(method)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        check(kwargs)
        return method(*args, **kwargs)

    return checked


def _accepted_keywords(method: Callable[..., Any]) -> frozenset[str]:
    names: set[str] = set()
    for parameter in inspect.signature(method).parameters.values():
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            names.add(parameter.name)
        elif parameter.kind is parameter.VAR_KEYWORD:
            names |= option_names(_unpacked(method, parameter.annotation))
    return frozenset(names)


def _unpacked(method: Callable[..., Any], annotation: object) -> type:
    """``X`` of a ``**options: Unpack[X]`` annotation (a string under postponed evaluation)."""
    if isinstance(annotation, str):
        namespace = {"Unpack": Unpack, **getattr(method, "__globals__", {})}
        annotation = eval(annotation, namespace)
    declared = get_args(annotation)
    if not declared or not isinstance(declared[0], type):
        raise TypeError(f"{method.__qualname__}: **options must be annotated Unpack[SomeOptions]")
    return declared[0]
