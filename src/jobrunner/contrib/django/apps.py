"""The Django app: ``INSTALLED_APPS = [..., "jobrunner.contrib.django"]``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class JobRunnerConfig(AppConfig):  # type: ignore[misc]  # django has no stubs here
    """Discovers handlers, wires migrations and follows settings changes."""

    name = "jobrunner.contrib.django"
    label = "jobrunner"
    verbose_name = "Background jobs (jobrunner)"

    def ready(self) -> None:
        from django.core.signals import setting_changed
        from django.db.models.signals import post_migrate
        from django.utils.module_loading import autodiscover_modules

        from jobrunner._errors import ConfigurationError
        from jobrunner.contrib.django import checks  # noqa: F401 - registers the checks
        from jobrunner.contrib.django._migrate import apply_after_migrate
        from jobrunner.contrib.django._settings import read_config

        post_migrate.connect(apply_after_migrate, sender=self)
        setting_changed.connect(_forget_settings)
        try:
            jobs_module = read_config().jobs_module
        except ConfigurationError:
            return  # the system checks report it (jobrunner.E001)
        if jobs_module:
            # Registering every app's handlers in every process: web processes need them
            # too, since scheduling a name without a handler is refused by default.
            autodiscover_modules(jobs_module)


def _forget_settings(setting: str, **kwargs: Any) -> None:
    if setting in ("JOBRUNNER", "DATABASES"):
        from jobrunner.contrib.django._runner import reset_runner

        reset_runner()
