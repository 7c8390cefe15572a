"""PostgresWorker: the queue worker on the PostgreSQL backend's store.

The worker itself is backend-neutral (:class:`jobrunner._queue._worker.QueueWorker`: claim,
execute through ``jobrunner._execution``, record); everything it asks of PostgreSQL goes
through :class:`~jobrunner.backends.postgres._store.PostgresStore`. This module keeps the
backend's public names, ``PostgresWorker`` and ``WorkerSettings``.
"""

from __future__ import annotations

from typing import Protocol

from jobrunner._queue._settings import WorkerSettings
from jobrunner._queue._store import QueueStore
from jobrunner._queue._worker import QueueWorker
from jobrunner.registry import JobHandlerRegistry

__all__ = ["PostgresWorker", "WorkerSettings"]


class WorkerSource(Protocol):
    """What a worker takes from its runner: the handlers and a store of its own."""

    @property
    def registry(self) -> JobHandlerRegistry:
        """The handlers to run."""

    def queue_store(self) -> QueueStore:
        """A new store for one worker."""


class PostgresWorker(QueueWorker):
    """Runs jobs for a :class:`~jobrunner.backends.postgres.PostgresJobRunner`.

    Embed it: ``worker = runner.create_worker(concurrency=10)`` then ``await worker.run()`` in a
    task, and ``await worker.stop()`` to shut down gracefully.

    Args:
        runner: The runner whose handlers run; the worker gets a store of its own from it.
        settings: How to claim, run and report (:meth:`WorkerSettings.build` validates them).
    """

    def __init__(self, runner: WorkerSource, settings: WorkerSettings) -> None:
        super().__init__(runner.queue_store(), runner.registry, settings)
