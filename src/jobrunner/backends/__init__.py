"""Backends implementing :class:`jobrunner.JobRunner`.

- :mod:`jobrunner.backends.postgres`: the default queue on PostgreSQL.
- :mod:`jobrunner.backends.temporal`: jobs as Temporal workflows (extra ``temporal``).
"""
