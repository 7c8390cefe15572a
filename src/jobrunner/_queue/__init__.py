"""The queue engine every queue backend shares: the storage contract, the worker, the ticker.

* :mod:`jobrunner._queue._store`: :class:`QueueStore`, everything the worker and the schedule
  ticker need from storage, as typed methods over typed rows and outcomes. A backend
  implements it (``backends.postgres.PostgresStore``); nothing here knows SQL.
* :mod:`jobrunner._queue._worker`: :class:`QueueWorker`, which claims attempts from a store,
  runs them through the execution core (:mod:`jobrunner._execution`) and records their outcomes.
* :mod:`jobrunner._queue._ticker`: :class:`ScheduleTicker`, the loop that fires due ticks of
  recurring schedules through a store.
* :mod:`jobrunner._queue._ticks`: which due ticks of a schedule fire (missed-tick and overlap
  policies), the pure decision every store applies.

This package imports the execution core, the models and the registry, never a runner or a
backend.
"""
