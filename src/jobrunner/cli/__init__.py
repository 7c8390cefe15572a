"""The ``jobrunner`` command line (and ``jobrunner-worker``).

Each subcommand lives in its own module exposing ``register(subparsers)``; the module list
below is the only place that names them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobrunner._errors import JobRunnerError
from jobrunner.observability import JsonFormatter

if TYPE_CHECKING:
    from jobrunner._config import Settings

_COMMAND_MODULES = ("_migrate", "_worker", "_schedules", "_jobs", "_dashboard", "_tenants")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="jobrunner", description="Background jobs: CLI.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"jobrunner.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"jobrunner.cli.{module_name}":
                continue
            raise
        module.register(sub)
    return parser


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler])
        return
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    """Entry point of ``jobrunner``.

    Args:
        argv: The arguments (default ``sys.argv[1:]``).
        settings: Settings to use instead of the environment's (the Django integration's
            ``manage.py jobrunner`` passes the project's); ``--database-url`` and ``--schema``
            still override them.

    Returns:
        The exit status: 2 for a refused argument, whether argparse's own checks (and the
        boundary checks its option types run) or a command found it, with a one-line
        message on stderr. ``--help`` exits through ``SystemExit(0)``, as argparse does.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        return 2  # argparse printed the usage and the error
    if settings is not None:
        args.base_settings = settings
    _setup_logging(args.verbose, getattr(args, "log_format", "text"))
    try:
        code: int = args.handler(args)
    except JobRunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jobrunner-worker`` (the same as ``jobrunner worker``)."""
    return main(["worker", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
