"""The shop's tests: pytest-django on a real PostgreSQL, with jobrunner's pytest plugin.

The plugin's ``jobrunner_dsn`` finds a PostgreSQL (``JOBRUNNER_TEST_DSN``, a local server,
...); Django creates its test database there (with a name of this run) and ``migrate``
creates the shop's tables and jobrunner's in it.
"""

import uuid

import pytest
from psycopg.conninfo import conninfo_to_dict


@pytest.fixture(scope="session")
def django_db_modify_db_settings(jobrunner_dsn: str) -> None:
    from django.conf import settings

    server = conninfo_to_dict(jobrunner_dsn)
    database = settings.DATABASES["default"]
    database.update(
        NAME=server.get("dbname", "postgres"),
        USER=server.get("user", ""),
        PASSWORD=server.get("password", ""),
        HOST=server.get("host", ""),
        PORT=server.get("port", ""),
    )
    database["TEST"]["NAME"] = f"test_shop_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session", autouse=True)
def _close_the_runner(django_db_setup: None, django_db_blocker: pytest.FixtureRequest):
    """The project's runner holds connections to the test database: close them before
    Django drops it."""
    yield
    from jobrunner.contrib.django import reset_runner

    with django_db_blocker.unblock():
        reset_runner()
