"""Scheduling arguments, checked in one place for every backend.

``schedule_job`` and ``schedule_recurring_job`` take the same arguments on the PostgreSQL, the
Temporal and the in-memory runner. Checking them here keeps the rules (and which typed error a
bad argument raises) the same on all of them, and everything is refused before any write.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from jobrunner._errors import DependencyError, HandlerNotFoundError, InvalidArgumentError
from jobrunner._limits import MAX_DEPENDENCIES
from jobrunner._models import MissedTickPolicy, OverlapPolicy
from jobrunner._options import (
    DEFAULT_MAX_CATCH_UP,
    DEFAULT_MISSED_TICKS,
    DEFAULT_OVERLAP,
    DEFAULT_PRIORITY,
    DEFAULT_TIMEZONE,
    BulkOptions,
    EnqueueOptions,
)
from jobrunner._policy import JobPolicy
from jobrunner._recurrence import (
    Recurrence,
    as_max_catch_up,
    as_missed_tick_policy,
    as_overlap_policy,
    parse_recurrence,
)
from jobrunner._validation import (
    SYSTEM_USER,
    as_aware_datetime,
    as_data_json,
    as_job_name,
    as_optional_key,
    as_priority,
    as_queue,
    as_tenant,
    as_uuid,
)
from jobrunner.registry import DEFAULT_QUEUE, HandlerSpec, JobHandlerRegistry

__all__ = [
    "JobArgs",
    "RecurringArgs",
    "as_dependencies",
    "as_dependency_failure",
    "bulk_args",
    "check_dependency_options",
    "enqueue_args",
    "job_args",
    "new_job_id",
    "new_job_ids",
    "recurring_args",
    "with_data",
    "with_parent",
]

# UUID version 7 (RFC 9562): 48 bits of Unix time in milliseconds, the version (7), 12 random
# bits, the variant (0b10), 62 random bits. As 128-bit integers:
_UUID7_RANDOM = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)
_UUID7_MARKS = (0x7 << 76) | (0x2 << 62)
# A batch's counter: the low 62 random bits with their top bit cleared, so adding up to 2**61
# never carries into the variant.
_UUID7_BATCH_RANDOM = _UUID7_RANDOM & ~(1 << 61)


def new_job_id() -> uuid.UUID:
    """A new job id: a time-ordered UUID (version 7: Unix milliseconds, then 74 random bits).

    Ids of jobs written later sort later, so inserting them appends to the right edge of the
    job indexes (primary key, claim order) instead of touching a random page of each
    (docs/performance.md); 74 random bits keep them unguessable and unique across processes.
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))
    return uuid.UUID(int=(millis << 80) | (rand & _UUID7_RANDOM) | _UUID7_MARKS)


def new_job_ids(count: int) -> int:
    """The first of ``count`` consecutive new job ids, as an integer (id ``i`` of the batch is
    ``first + i``, ``i < count``).

    One :func:`new_job_id` whose last 61 random bits are a counter (RFC 9562's monotonic
    random method): the ids of a batch are version 7 UUIDs in input order, cost one addition
    each, and keep 73 random bits per batch. ``count`` must not exceed ``2**61``.
    """
    if not 0 <= count <= 1 << 61:
        raise ValueError("count out of range")
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))
    return (millis << 80) | (rand & _UUID7_BATCH_RANDOM) | _UUID7_MARKS


#: Attempts of a job whose name has no local handler (``require_registered=False``).
DEFAULT_MAX_ATTEMPTS = 3


def _as_is(encoded: bytes) -> bytes:
    return encoded


def _jsonb_param(value: object, encoded: bytes) -> Jsonb:
    """A ``jsonb`` parameter of ``value``, whose JSON (UTF-8) is ``encoded``.

    ASCII JSON is sent as it is, without a second encoding: its bytes are the same in every
    client encoding. Other JSON is left to psycopg, which escapes it to ASCII (the server
    reads a binary ``jsonb`` in the connection's client encoding, which may not be UTF-8).
    """
    return Jsonb(encoded, _as_is) if encoded.isascii() else Jsonb(value)


# The stored policy of a handler, encoded once: a spec is frozen, so its policy never changes.
# Keyed by the spec's id, the spec kept in the value so that the id cannot be reused.
_POLICY_JSON: dict[int, tuple[HandlerSpec, bytes]] = {}
_POLICY_JSON_MAX = 1024


def _policy_json(spec: HandlerSpec) -> bytes:
    found = _POLICY_JSON.get(id(spec))
    if found is not None and found[0] is spec:
        return found[1]
    encoded = json.dumps(spec.policy.to_json()).encode("utf-8")
    if len(_POLICY_JSON) >= _POLICY_JSON_MAX:  # specs replaced over and over: start afresh
        _POLICY_JSON.clear()
    _POLICY_JSON[id(spec)] = (spec, encoded)
    return encoded


@dataclass(frozen=True, slots=True)
class JobArgs:
    """Validated ``schedule_job`` arguments."""

    name: str
    spec: HandlerSpec | None
    data: dict[str, Any]
    metadata: dict[str, Any]
    run_at: datetime | None
    tenant: uuid.UUID
    user_id: uuid.UUID
    queue: str
    priority: int
    singleton_key: str | None
    data_json: bytes
    """``data`` as the JSON its check encoded (UTF-8), sent as it is by the inserts."""
    metadata_json: bytes
    """``metadata`` likewise."""
    depends_on: tuple[uuid.UUID, ...] = ()
    """The jobs it waits for (same tenant, no duplicates, in the order given)."""
    run_on_failure: bool = False
    """``on_dependency_failure="run"``."""
    parent_job_id: uuid.UUID | None = None
    """The job whose handler enqueued it (``ctx.schedule_job``)."""

    @property
    def max_attempts(self) -> int:
        """The handler's attempt budget, or the default for an unknown name."""
        return self.spec.retry.max_attempts if self.spec else DEFAULT_MAX_ATTEMPTS

    @property
    def policy(self) -> JobPolicy | None:
        """The policy stored with the job: its handler's, or ``None`` for an unknown name
        (the first worker that claims the job pins its own)."""
        return self.spec.policy if self.spec else None

    @property
    def policy_json(self) -> bytes | None:
        """:attr:`policy` as JSON (ASCII), encoded once per handler."""
        return None if self.spec is None else _policy_json(self.spec)

    @property
    def policy_param(self) -> Jsonb | None:
        """:attr:`policy` as the ``policy`` parameter of the insert statements."""
        encoded = self.policy_json
        return None if encoded is None else Jsonb(encoded, _as_is)  # ASCII (json.dumps)

    @property
    def data_param(self) -> Jsonb:
        """:attr:`data` as the ``data`` parameter of the insert statements."""
        return _jsonb_param(self.data, self.data_json)

    @property
    def metadata_param(self) -> Jsonb:
        """:attr:`metadata` as the ``metadata`` parameter of the insert statements."""
        return _jsonb_param(self.metadata, self.metadata_json)


@dataclass(frozen=True, slots=True)
class RecurringArgs:
    """Validated ``schedule_recurring_job`` arguments (``job.singleton_key`` as given)."""

    job: JobArgs
    recurrence: Recurrence
    missed_ticks: MissedTickPolicy
    overlap: OverlapPolicy
    max_catch_up: int
    depends_on_previous: bool = False
    """A tick's job waits until the previous tick's job is final."""


def job_args(
    registry: JobHandlerRegistry,
    require_registered: bool,
    name: object,
    data: Mapping[str, Any] | None,
    run_at: object = None,
    *,
    tenant: object = None,
    priority: object = DEFAULT_PRIORITY,
    singleton_key: object = None,
    user_id: object = None,
    metadata: Mapping[str, Any] | None = None,
    queue: object = None,
    depends_on: object = None,
    on_dependency_failure: object = "cancel",
) -> JobArgs:
    """Check every scheduling argument; the queue defaults to the handler's.

    Raises:
        HandlerNotFoundError: ``name`` has no handler and ``require_registered`` is set.
        InvalidArgumentError: any other malformed argument.
    """
    job_name = as_job_name(name)
    spec = registry.find(job_name)
    if spec is None and require_registered:
        raise HandlerNotFoundError(job_name)
    payload, payload_json = as_data_json(data)
    meta, meta_json = as_data_json(metadata, "metadata")
    when = None if run_at is None else as_aware_datetime(run_at)
    return JobArgs(
        name=job_name,
        spec=spec,
        data=payload,
        metadata=meta,
        data_json=payload_json,
        metadata_json=meta_json,
        run_at=when,
        tenant=as_tenant(tenant),
        user_id=SYSTEM_USER if user_id is None else as_uuid(user_id, "user_id"),
        queue=as_queue(queue) if queue is not None else (spec.queue if spec else DEFAULT_QUEUE),
        priority=as_priority(priority),
        singleton_key=as_optional_key(singleton_key, "singleton_key"),
        depends_on=as_dependencies(depends_on),
        run_on_failure=as_dependency_failure(on_dependency_failure) == "run",
    )


def as_dependencies(value: object) -> tuple[uuid.UUID, ...]:
    """``depends_on`` as job ids: duplicates dropped, order kept.

    Raises:
        DependencyError: not an iterable of job ids, or more than ``MAX_DEPENDENCIES``.
    """
    if value is None:
        return ()
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise DependencyError("depends_on must be a list of job ids")
    ids: dict[uuid.UUID, None] = {}
    for item in value:
        try:
            ids[as_uuid(item, "depends_on")] = None
        except InvalidArgumentError as exc:
            raise DependencyError(str(exc)) from None
        if len(ids) > MAX_DEPENDENCIES:
            raise DependencyError(
                f"depends_on takes at most {MAX_DEPENDENCIES} job ids (MAX_DEPENDENCIES)"
            )
    return tuple(ids)


def as_dependency_failure(value: object) -> str:
    """``on_dependency_failure``: ``"cancel"`` or ``"run"``.

    Raises:
        InvalidArgumentError: anything else.
    """
    if value not in ("cancel", "run"):
        raise InvalidArgumentError(
            f'on_dependency_failure must be "cancel" or "run", got {value!r:.80}'
        )
    return str(value)


def with_parent(args: JobArgs, parent_tenant: uuid.UUID, parent_job_id: uuid.UUID) -> JobArgs:
    """``args`` of a job a handler enqueues (``ctx.schedule_job``): it records its parent and
    belongs to the parent's tenant.

    Raises:
        InvalidArgumentError: ``args`` name another tenant.
    """
    if args.tenant != parent_tenant:
        raise InvalidArgumentError("ctx.schedule_job enqueues jobs of the handler's own tenant")
    return replace(args, parent_job_id=parent_job_id)


def with_data(args: JobArgs, data: Mapping[str, Any] | None) -> JobArgs:
    """``args`` with another payload (checked), as :func:`job_args` would have built them.

    Raises:
        InvalidArgumentError: the payload is refused.
    """
    payload, payload_json = as_data_json(data)
    return replace(args, data=payload, data_json=payload_json)


def check_dependency_options(args: JobArgs) -> None:
    """Refuse what a job with dependencies cannot take.

    Raises:
        DependencyError: a singleton key with ``depends_on`` (a waiting job holds no key, so
            its release could meet a second holder).
    """
    if args.depends_on and args.singleton_key is not None:
        raise DependencyError("a job with depends_on cannot take a singleton_key")


def enqueue_args(
    registry: JobHandlerRegistry,
    require_registered: bool,
    name: object,
    data: Mapping[str, Any] | None,
    run_at: object,
    options: EnqueueOptions,
) -> JobArgs:
    """:func:`job_args` for ``schedule_job`` / ``schedule_job_at`` and their options
    (``connection`` is the backend's to handle)."""
    return job_args(
        registry,
        require_registered,
        name,
        data,
        run_at,
        tenant=options.get("tenant"),
        priority=options.get("priority", DEFAULT_PRIORITY),
        singleton_key=options.get("singleton_key"),
        user_id=options.get("user_id"),
        metadata=options.get("metadata"),
        queue=options.get("queue"),
        depends_on=options.get("depends_on"),
        on_dependency_failure=options.get("on_dependency_failure", "cancel"),
    )


def bulk_args(
    registry: JobHandlerRegistry, require_registered: bool, name: object, options: BulkOptions
) -> JobArgs:
    """:func:`job_args` for what the jobs of a ``schedule_jobs`` batch share (their data is
    checked by :func:`~jobrunner._validation.as_bulk_data`)."""
    return job_args(
        registry,
        require_registered,
        name,
        None,
        options.get("run_at"),
        tenant=options.get("tenant"),
        priority=options.get("priority", DEFAULT_PRIORITY),
        user_id=options.get("user_id"),
        metadata=options.get("metadata"),
        queue=options.get("queue"),
        depends_on=options.get("depends_on"),
        on_dependency_failure=options.get("on_dependency_failure", "cancel"),
    )


def recurring_args(
    registry: JobHandlerRegistry,
    require_registered: bool,
    name: object,
    data: Mapping[str, Any] | None,
    expression: object,
    *,
    tenant: object = None,
    timezone: object = DEFAULT_TIMEZONE,
    singleton_key: object = None,
    missed_ticks: object = DEFAULT_MISSED_TICKS,
    overlap: object = DEFAULT_OVERLAP,
    max_catch_up: object = DEFAULT_MAX_CATCH_UP,
    depends_on_previous: object = False,
    priority: object = DEFAULT_PRIORITY,
    queue: object = None,
    user_id: object = None,
    metadata: Mapping[str, Any] | None = None,
) -> RecurringArgs:
    """:func:`job_args` plus the recurrence and its policies; the keywords are
    :class:`~jobrunner._options.RecurringOptions` (``recurring_args(..., **options)``).

    Raises:
        ScheduleError: bad expression, timezone or policy.
        HandlerNotFoundError: ``name`` has no handler and ``require_registered`` is set.
        InvalidArgumentError: any other malformed argument.
    """
    job = job_args(
        registry,
        require_registered,
        name,
        data,
        tenant=tenant,
        priority=priority,
        singleton_key=singleton_key,
        user_id=user_id,
        metadata=metadata,
        queue=queue,
    )
    return RecurringArgs(
        job=job,
        recurrence=parse_recurrence(expression, timezone),
        missed_ticks=as_missed_tick_policy(missed_ticks),
        overlap=as_overlap_policy(overlap),
        max_catch_up=as_max_catch_up(max_catch_up),
        depends_on_previous=as_flag(depends_on_previous, "depends_on_previous"),
    )


def as_flag(value: object, name: str) -> bool:
    """A boolean option.

    Raises:
        InvalidArgumentError: not a ``bool``.
    """
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be True or False, got {value!r:.80}")
    return value
