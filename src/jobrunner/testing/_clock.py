"""The in-memory backend's clocks, for tests: :class:`FakeClock` moves only when a test moves it.

They live with the backend (:mod:`jobrunner.backends.memory._clock`); ``jobrunner.testing``
re-exports them.
"""

from jobrunner.backends.memory._clock import Clock, FakeClock, SystemClock

__all__ = ["Clock", "FakeClock", "SystemClock"]
