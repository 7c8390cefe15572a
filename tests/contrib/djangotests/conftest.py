"""A real Django project (./project) on the test PostgreSQL, with pytest-django.

Django is configured when this directory is collected: its settings module reads the
database and a schema of this test run from the environment, which this file sets first (and
which ``manage.py`` subprocesses inherit). ``django_db_setup`` uses the test PostgreSQL's
existing database with that schema instead of creating a test database, runs ``migrate``
(Django's tables and, through the jobrunner app, jobrunner's) and drops both schemas at the
end.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

PROJECT = Path(__file__).resolve().parent / "project"
SCHEMA = f"jrdj_{uuid.uuid4().hex[:10]}"

os.environ["JR_DJANGO_SCHEMA"] = SCHEMA
os.environ["DJANGO_SETTINGS_MODULE"] = "jrproject.settings"
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import django  # noqa: E402 - configured by the environment set above

django.setup()


def _schemas() -> list[str]:
    from django.conf import settings

    return [SCHEMA, settings.JOBRUNNER["SCHEMA"]]


@pytest.fixture(scope="session")
def django_db_setup(jobrunner_dsn: str, django_db_blocker: object) -> Iterator[None]:
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from jobrunner.contrib.django import reset_runner

    params = psycopg.conninfo.conninfo_to_dict(jobrunner_dsn)
    settings.DATABASES["default"].update(
        NAME=params.get("dbname", ""),
        USER=params.get("user", ""),
        PASSWORD=params.get("password", ""),
        HOST=params.get("host", ""),
        PORT=params.get("port", ""),
    )
    os.environ["JR_DJANGO_DATABASE_URL"] = jobrunner_dsn  # for manage.py subprocesses
    connections["default"].close()
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
    try:
        with django_db_blocker.unblock():  # type: ignore[attr-defined]
            call_command("migrate", verbosity=0)
        yield
    finally:
        with django_db_blocker.unblock():  # type: ignore[attr-defined]
            reset_runner()
            connections.close_all()
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            for schema in _schemas():
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


@pytest.fixture
def project_env() -> dict[str, str]:
    """The environment of a ``manage.py`` subprocess of this project."""
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="jrproject.settings",
        PYTHONPATH=os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
    )
