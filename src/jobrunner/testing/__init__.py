"""Helpers for testing code that uses jobrunner (and for jobrunner's own tests).

- :class:`InMemoryJobRunner`: the whole runner API without a database, on a :class:`FakeClock`.
- :func:`adrain` / :func:`drain`: run everything due to completion (in memory or PostgreSQL).
- :func:`assert_enqueued` / :func:`assert_not_enqueued`: did the code schedule a job?
- :func:`arun_handler` / :func:`run_handler`: call one handler with a recording fake context.
- :func:`running_worker`, :func:`find_test_dsn`, :func:`isolated_schema`: real-backend plumbing.

The pytest plugin (``jobrunner.pytest_plugin``) wraps these as fixtures.
"""

from jobrunner.testing._assertions import (
    EnqueuedJob,
    assert_enqueued,
    assert_not_enqueued,
    enqueued_jobs,
)
from jobrunner.testing._clock import Clock, FakeClock, SystemClock
from jobrunner.testing._database import find_test_dsn, isolated_schema
from jobrunner.testing._drain import DrainError, adrain, drain
from jobrunner.testing._handler import HandlerRun, RecordedStep, arun_handler, run_handler
from jobrunner.testing._memory import InMemoryJobRunner, MemoryWorker
from jobrunner.testing._worker import running_worker

__all__ = [
    "Clock",
    "DrainError",
    "EnqueuedJob",
    "FakeClock",
    "HandlerRun",
    "InMemoryJobRunner",
    "MemoryWorker",
    "RecordedStep",
    "SystemClock",
    "adrain",
    "arun_handler",
    "assert_enqueued",
    "assert_not_enqueued",
    "drain",
    "enqueued_jobs",
    "find_test_dsn",
    "isolated_schema",
    "run_handler",
    "running_worker",
]
