"""The in-memory backend: the queue store in Python data structures, for fast tests.

:class:`InMemoryJobRunner` runs the same queue worker, schedule ticker and execution core as
the PostgreSQL backend, on a :class:`MemoryStore` whose time is a :class:`Clock` (a
:class:`FakeClock` by default). ``jobrunner.testing`` re-exports the user-facing names.
"""

from jobrunner.backends.memory._clock import Clock, FakeClock, SystemClock
from jobrunner.backends.memory._runner import InMemoryJobRunner, MemoryWorker
from jobrunner.backends.memory._store import MemoryStore

__all__ = [
    "Clock",
    "FakeClock",
    "InMemoryJobRunner",
    "MemoryStore",
    "MemoryWorker",
    "SystemClock",
]
