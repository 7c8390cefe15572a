"""Worker settings: how a queue worker claims, runs and reports jobs (validated, typed)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobrunner._errors import InvalidArgumentError
from jobrunner._limits import MAX_LEASE_SECONDS, MAX_WORKER_COUNT, MAX_WORKER_INTERVAL_SECONDS
from jobrunner._validation import as_count, as_queues, as_seconds, as_uuid

__all__ = ["DEFAULT_PREFETCH", "PREFETCH_HORIZON", "PREFETCH_MAX_WAIT", "WorkerSettings"]

#: Default cap of the claimed jobs a worker holds waiting for a free slot (``prefetch``).
DEFAULT_PREFETCH = 500
#: Seconds of work a worker may hold claimed but not started: the prefetch is sized to what its
#: slots are expected to start within this time, from the handlers' recent run times.
PREFETCH_HORIZON = 0.05
#: Seconds after which a held (claimed, not started) job is handed back to the queue, attempt
#: not counted: the hard bound on how long a worker keeps work it cannot start.
PREFETCH_MAX_WAIT = 1.0


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker claims, runs and reports jobs."""

    concurrency: int = 20
    """Handlers running at once in this process."""
    queues: tuple[str, ...] = ()
    """Queues to claim from; empty means every queue of the registered handlers."""
    lease_seconds: float = 25.0
    """A job whose worker stops heartbeating is re-queued this long after the last beat (plus
    at most one ``rescue_interval``: with the defaults within 25 + 25/6 < 30 s)."""
    heartbeat_interval: float | None = None
    """Seconds between heartbeats (default: a third of ``lease_seconds``)."""
    rescue_interval: float | None = None
    """Seconds between scans for expired leases (default: a sixth of ``lease_seconds``)."""
    poll_interval: float = 5.0
    """Safety-net poll when no notification arrives."""
    claim_batch: int | None = None
    """Most jobs claimed per statement (default: no cap beyond the free slots plus the
    prefetch)."""
    prefetch: int = DEFAULT_PREFETCH
    """Most claimed jobs the worker aims to hold waiting for a free slot: only what its slots
    are expected to start within :data:`PREFETCH_HORIZON` seconds (from the handlers' recent
    run times), at most this many (twice this while a claim is in flight); a held job not
    started within :data:`PREFETCH_MAX_WAIT` seconds is handed back. ``0``: claim only for
    free slots."""
    flush_interval: float = 0.002
    """Outcomes are written at most this many seconds after the first one is buffered."""
    flush_max: int = 1000
    """Outcomes written per statement at most."""
    shutdown_grace: float = 30.0
    """Seconds running jobs get to finish after a stop request before they are re-queued."""
    listen_probe_interval: float = 15.0
    """Seconds of silence after which the LISTEN connection is probed with a self-NOTIFY."""
    sync_threads: int | None = None
    """Threads for plain ``def`` handlers (default: ``concurrency``)."""
    worker_id: uuid.UUID = field(default_factory=uuid.uuid4)
    """Identity written to ``jobs.worker_id`` of claimed jobs."""
    rand: Callable[[], float] = random.random
    """Source of jitter for retry delays; inject for deterministic tests."""
    run_scheduler: bool = True
    """Also fire due ticks of recurring schedules (safe in every worker: one job per tick)."""
    fair: bool | None = None
    """Claim round-robin between the tenants of a queue (``True``) or in priority order
    across tenants (``False``); ``None`` follows the database's switch,
    ``runner.flow.set_fair_claiming``, which is on by default (docs/fairness.md). A queue
    holding one tenant's jobs is claimed alike either way; limits apply either way."""

    @classmethod
    def build(
        cls,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        **options: Any,
    ) -> WorkerSettings:
        """Validate and build settings; unknown options are a clear error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(options) - known
        if unknown:
            raise InvalidArgumentError(f"unknown worker options: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(options)
        if concurrency is not None:
            values["concurrency"] = concurrency
        if queues is not None:
            values["queues"] = queues
        _check_settings(values)
        settings = cls(**values)
        if not isinstance(settings.concurrency, int) or settings.concurrency < 1:
            raise InvalidArgumentError("concurrency must be a positive integer")
        if settings.lease_seconds <= 0 or settings.poll_interval <= 0:
            raise InvalidArgumentError("lease_seconds and poll_interval must be positive")
        return settings

    @property
    def heartbeat_every(self) -> float:
        """Effective heartbeat interval."""
        return self.heartbeat_interval or self.lease_seconds / 3

    @property
    def rescue_every(self) -> float:
        """Effective rescue interval."""
        return self.rescue_interval or max(self.lease_seconds / 6, 0.05)

    @property
    def requeue_bound(self) -> float:
        """Seconds after a dead worker's last heartbeat by which its jobs are re-queued at the
        latest (while any worker runs): the lease plus one rescue interval."""
        return self.lease_seconds + self.rescue_every


_SECONDS = ("lease_seconds", "poll_interval", "listen_probe_interval")
_SECONDS_OR_ZERO = ("flush_interval", "shutdown_grace")
_OPTIONAL_SECONDS = ("heartbeat_interval", "rescue_interval")
_COUNTS = ("concurrency", "flush_max")
_OPTIONAL_COUNTS = ("claim_batch", "sync_threads")
_COUNTS_OR_ZERO = ("prefetch",)
_FLAGS = ("run_scheduler",)
_OPTIONAL_FLAGS = ("fair",)


def _check_settings(values: dict[str, Any]) -> None:
    """Validate worker options in place (seconds may be timedeltas); raise a typed error.

    The bounds are the documented ones of :mod:`jobrunner._validation`: ``lease_seconds`` at
    most ``MAX_LEASE_SECONDS``, the other intervals at most ``MAX_WORKER_INTERVAL_SECONDS``,
    the counts at most ``MAX_WORKER_COUNT``.
    """
    for name in _SECONDS + _SECONDS_OR_ZERO + _OPTIONAL_SECONDS:
        if name in values and not (name in _OPTIONAL_SECONDS and values[name] is None):
            values[name] = as_seconds(
                values[name],
                name,
                allow_zero=name in _SECONDS_OR_ZERO,
                maximum=MAX_LEASE_SECONDS
                if name == "lease_seconds"
                else MAX_WORKER_INTERVAL_SECONDS,
            )
    for name in _COUNTS + _COUNTS_OR_ZERO + _OPTIONAL_COUNTS:
        value = values.get(name)
        if name not in values or (value is None and name in _OPTIONAL_COUNTS):
            continue
        values[name] = as_count(
            value, name, maximum=MAX_WORKER_COUNT, minimum=0 if name in _COUNTS_OR_ZERO else 1
        )
    values["queues"] = as_queues(values.get("queues", ()))
    if "worker_id" in values:
        values["worker_id"] = as_uuid(values["worker_id"], "worker_id")
    if "rand" in values and not callable(values["rand"]):
        raise InvalidArgumentError("rand must be a callable returning floats in [0, 1)")
    for name in _FLAGS:
        if name in values and not isinstance(values[name], bool):
            raise InvalidArgumentError(f"{name} must be True or False")
    for name in _OPTIONAL_FLAGS:
        if values.get(name) is not None and not isinstance(values[name], bool):
            raise InvalidArgumentError(f"{name} must be True, False or None")
    lease = values.get("lease_seconds", WorkerSettings.lease_seconds)
    beat = values.get("heartbeat_interval")
    if beat is not None and beat >= lease:
        # Leases would lapse between beats and running jobs be rescued under the worker.
        raise InvalidArgumentError("heartbeat_interval must be shorter than lease_seconds")
