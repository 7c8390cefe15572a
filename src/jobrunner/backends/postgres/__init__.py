"""The PostgreSQL backend: a queue in the ``jobs`` table, claimed with ``SKIP LOCKED``."""

from jobrunner.backends.postgres._runner import PostgresJobRunner
from jobrunner.backends.postgres._worker import PostgresWorker, WorkerSettings

__all__ = ["PostgresJobRunner", "PostgresWorker", "WorkerSettings"]
