"""Helpers for testing code that uses jobrunner (and for jobrunner's own tests)."""

from jobrunner.testing._database import find_test_dsn, isolated_schema
from jobrunner.testing._worker import running_worker

__all__ = ["find_test_dsn", "isolated_schema", "running_worker"]
