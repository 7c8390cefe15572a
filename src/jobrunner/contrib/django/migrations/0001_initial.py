"""Applies jobrunner's own SQL migrations to its schema (``JOBRUNNER["SCHEMA"]``).

jobrunner's tables are not Django models: this migration runs jobrunner's numbered SQL
migrations, and the app applies newer ones (after a jobrunner upgrade) on every ``migrate``.
Reversing it removes nothing.
"""

from __future__ import annotations

from django.db import migrations

from jobrunner.contrib.django._migrate import apply_in_migration


class Migration(migrations.Migration):  # type: ignore[misc]  # django has no stubs here
    initial = True
    atomic = False  # jobrunner migrates on its own connection, one transaction per step
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.RunPython(apply_in_migration, migrations.RunPython.noop, elidable=False)
    ]
