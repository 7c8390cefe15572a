"""``manage.py jobrunner ...``: the ``jobrunner`` command line on this project's settings."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

# Options ManagementUtility reads itself; jobrunner's parser must not see them.
_DJANGO_GLOBAL_OPTIONS = ("--settings", "--pythonpath")


def _without_django_options(argv: list[str]) -> list[str]:
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in _DJANGO_GLOBAL_OPTIONS:
            skip_value = True
        elif not arg.startswith(tuple(f"{o}=" for o in _DJANGO_GLOBAL_OPTIONS)):
            kept.append(arg)
    return kept


def _run_cli(argv: list[str]) -> int:
    from jobrunner.cli import main
    from jobrunner.contrib.django._runner import config
    from jobrunner.contrib.django._settings import runner_settings

    return main(argv, settings=runner_settings(config()))


class Command(BaseCommand):  # type: ignore[misc]  # django has no stubs here
    help = (
        "The jobrunner command line (migrate, worker, jobs, schedules, metrics, history, "
        "dashboard, tenants) on the database and settings of settings.JOBRUNNER; "
        "`manage.py jobrunner --help` lists the subcommands."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help="jobrunner's arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        # jobrunner's own parser reads everything after the command name: Django's would
        # claim options such as -v for itself.
        from django.db import connections

        try:
            code = _run_cli(_without_django_options(argv[2:]))
        finally:
            connections.close_all()
        if code:
            sys.exit(code)

    def handle(self, *args: Any, **options: Any) -> None:
        code = _run_cli([str(a) for a in options["arguments"]])
        if code:
            raise CommandError(f"jobrunner exited with status {code}", returncode=code)
