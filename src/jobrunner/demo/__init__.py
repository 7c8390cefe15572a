"""The demo: ``python -m jobrunner.demo`` (or ``python3 dev.py demo``).

Starts a private PostgreSQL unless ``JOBRUNNER_DATABASE_URL`` is set, applies migrations, runs a
worker with the example app in :mod:`jobrunner.demo.app`, schedules immediate, delayed,
failing-then-retried and cancelled jobs, and prints what happened.
"""
