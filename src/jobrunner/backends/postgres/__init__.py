"""The PostgreSQL backend: a queue in the ``jobs`` table, claimed with ``SKIP LOCKED``."""

from jobrunner.backends.postgres._flow import FlowControl, FlowRule, SyncFlowControl
from jobrunner.backends.postgres._runner import PostgresJobRunner
from jobrunner.backends.postgres._worker import PostgresWorker, WorkerSettings

__all__ = [
    "FlowControl",
    "FlowRule",
    "PostgresJobRunner",
    "PostgresWorker",
    "SyncFlowControl",
    "WorkerSettings",
]
