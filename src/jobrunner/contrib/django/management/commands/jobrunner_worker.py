"""``manage.py jobrunner_worker``: ``jobrunner-worker`` on this project's settings."""

from __future__ import annotations

import argparse
import logging
from typing import Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser


class _OntoParser:
    """Stands in for argparse sub-parsers: ``jobrunner worker``'s options go onto ours."""

    def __init__(self, parser: CommandParser) -> None:
        self._parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> CommandParser:
        return self._parser


class Command(BaseCommand):  # type: ignore[misc]  # django has no stubs here
    help = (
        "Run a jobrunner worker for the handlers of the installed apps' jobs modules, on the "
        "database and settings of settings.JOBRUNNER. Stops gracefully on SIGTERM/SIGINT."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        from jobrunner.cli import _worker

        # The very parser of jobrunner-worker, so both always take the same flags.
        _worker.register(
            cast("argparse._SubParsersAction[argparse.ArgumentParser]", _OntoParser(parser))
        )
        project_default = {
            "database_url": "database URL (default: the DATABASES entry of settings.JOBRUNNER)",
            "schema": "schema of the jobrunner tables (default: settings.JOBRUNNER['SCHEMA'])",
        }
        for action in parser._actions:
            if action.dest in project_default:
                action.help = project_default[action.dest]
            elif action.dest == "app":
                action.required = False
                action.help = (
                    "more modules that register handlers (the installed apps' jobs modules "
                    "are imported already); repeat or comma-separate"
                )

    def handle(self, *args: Any, **options: Any) -> None:
        from jobrunner.cli._worker import run
        from jobrunner.contrib.django._runner import config
        from jobrunner.contrib.django._settings import runner_settings

        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.DEBUG if options["verbosity"] >= 2 else logging.INFO,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
        namespace = argparse.Namespace(**options)
        namespace.app = list(options.get("app") or [])
        namespace.base_settings = runner_settings(config())
        code = run(namespace)
        if code:
            raise CommandError(f"the worker exited with status {code}", returncode=code)
