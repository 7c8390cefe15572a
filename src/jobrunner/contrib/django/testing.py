"""Test support: ``TEST_RUNNER = "jobrunner.contrib.django.testing.DiscoverRunner"``."""

from __future__ import annotations

from typing import Any

from django.test.runner import DiscoverRunner as _DjangoDiscoverRunner

from jobrunner.contrib.django._runner import reset_runner


class DiscoverRunner(_DjangoDiscoverRunner):  # type: ignore[misc]  # django has no stubs here
    """Django's test runner, closing the project's runner before the test databases go.

    The runner built by ``get_runner()`` during the tests keeps connections to the test
    database, and PostgreSQL refuses to drop a database that has connections. (With
    pytest-django, call ``reset_runner()`` in a session fixture instead: docs/howto/django.md.)
    """

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        reset_runner()
        super().teardown_databases(old_config, **kwargs)
