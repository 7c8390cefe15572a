"""System checks (``manage.py check``): ``settings.JOBRUNNER`` and the database it uses."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from jobrunner._errors import ConfigurationError
from jobrunner.contrib.django._settings import read_config


@register()  # type: ignore[untyped-decorator]  # django has no stubs here
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``jobrunner.E001``: a malformed setting; ``jobrunner.E002``: not a PostgreSQL alias."""
    try:
        config = read_config()
    except ConfigurationError as exc:
        return [Error(str(exc), id="jobrunner.E001")]
    if config.database_url is None and config.settings.runner_type != "memory":
        from django.db import connections

        vendor = connections[config.database].vendor
        if vendor != "postgresql":
            return [
                Error(
                    f"JOBRUNNER['DATABASE'] is {config.database!r}, a {vendor} database; "
                    "jobrunner needs PostgreSQL",
                    hint="Use django.db.backends.postgresql or set JOBRUNNER['DATABASE_URL'].",
                    id="jobrunner.E002",
                )
            ]
    return []
