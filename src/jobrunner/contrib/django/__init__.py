"""jobrunner in Django (extra ``jobrunner-pg[django]``).

Add ``"jobrunner.contrib.django"`` to ``INSTALLED_APPS``; configure it with
``settings.JOBRUNNER`` (every key optional; the database is ``DATABASES["default"]``)::

    JOBRUNNER = {
        "DATABASE": "default",        # alias of the database holding the jobrunner tables
        "SCHEMA": "jobrunner",
        "RUNNER_TYPE": "postgres",    # or "temporal" (with "TEMPORAL": {"ADDRESS": ...})
        "DASHBOARD": {"TENANT": "myproject.tenancy.dashboard_tenant"},
    }

Then:

- ``manage.py migrate`` creates and upgrades the jobrunner tables;
- each installed app's ``jobs`` module is imported at start-up (register handlers there);
- :func:`enqueue_on_commit` schedules a job in the current transaction through Django's own
  connection (:func:`aenqueue_on_commit` from async views);
- :func:`get_runner` is the project's :class:`~jobrunner.SyncJobRunner`;
- ``manage.py jobrunner_worker`` runs a worker (the flags of ``jobrunner-worker``),
  ``manage.py jobrunner ...`` is the ``jobrunner`` command line on this project's settings;
- ``path("admin/jobs/", include("jobrunner.contrib.django.urls"))`` serves the dashboard
  to staff users.

See docs/howto/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["aenqueue_on_commit", "enqueue_on_commit", "get_runner", "reset_runner"]

if TYPE_CHECKING:
    from jobrunner.contrib.django._runner import (
        aenqueue_on_commit,
        enqueue_on_commit,
        get_runner,
        reset_runner,
    )
else:

    def __getattr__(name: str) -> Any:
        # Imported on first use: INSTALLED_APPS imports this package before Django's
        # settings and apps are ready.
        if name in __all__:
            from jobrunner.contrib.django import _runner

            return getattr(_runner, name)
        raise AttributeError(name)
