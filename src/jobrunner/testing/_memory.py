"""The in-memory runner, for tests: it lives with the backends (:mod:`jobrunner.backends.memory`);
``jobrunner.testing`` re-exports it."""

from jobrunner.backends.memory import InMemoryJobRunner, MemoryWorker

__all__ = ["InMemoryJobRunner", "MemoryWorker"]
