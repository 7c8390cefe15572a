"""A Django project using jobrunner.contrib.django, for jobrunner's tests.

The tests set ``JR_DJANGO_DATABASE_URL`` (the test PostgreSQL) and ``JR_DJANGO_SCHEMA`` (a
schema of this test run: Django's tables in it, jobrunner's in ``<schema>_jobs``), so that
``manage.py`` subprocesses use the same database.
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

SCHEMA = os.environ.get("JR_DJANGO_SCHEMA", "jr_django")
_db = conninfo_to_dict(
    os.environ.get("JR_DJANGO_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
)

SECRET_KEY = "jobrunner-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "jrproject.urls"
LOGIN_URL = "/login/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "jobrunner.contrib.django",
    "djshop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES: list[dict[str, object]] = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "test"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        "ATOMIC_REQUESTS": True,
        "OPTIONS": {"options": f"-c search_path={SCHEMA}"},
        # For `manage.py test` (Django's runner creates and drops this database).
        "TEST": {"NAME": os.environ.get("JR_DJANGO_TEST_DATABASE", "test_jrproject")},
    }
}
TEST_RUNNER = "jobrunner.contrib.django.testing.DiscoverRunner"

JOBRUNNER = {
    "SCHEMA": f"{SCHEMA}_jobs",
    "POOL_SIZE": 4,
    "DASHBOARD": {"TENANT": "djshop.views.dashboard_tenant"},
}
