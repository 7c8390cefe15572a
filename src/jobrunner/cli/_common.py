"""Options and helpers shared by CLI subcommands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from jobrunner._config import Settings
from jobrunner._errors import ConfigurationError, InvalidArgumentError
from jobrunner._factory import JobRunnerFactory
from jobrunner._validation import as_count, as_queues, as_seconds, as_uuid, check_text

if TYPE_CHECKING:
    from jobrunner._runner import JobRunner

T = TypeVar("T")


# -- option types --------------------------------------------------------------------------------
# Each is an argparse ``type=`` running the API's own boundary check on the raw text: a bad
# value is argparse's usage error (a one-line message, exit code 2, no traceback) before
# anything connects to the database.


def checked(parse: Callable[[str], T], what: str) -> Callable[[str], T]:
    """An argparse ``type`` from a parser that raises :class:`InvalidArgumentError`
    (or ``ValueError`` for text that is not a number at all)."""

    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except InvalidArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"invalid {what}: {raw!r:.80}") from None

    convert.__name__ = what
    return convert


def seconds_option(
    what: str, *, maximum: float, allow_zero: bool = False
) -> Callable[[str], float]:
    """Seconds, a finite number up to ``maximum`` (one of the documented bounds)."""
    return checked(
        lambda raw: as_seconds(float(raw), "value", allow_zero=allow_zero, maximum=maximum),
        what,
    )


def count_option(what: str, *, maximum: int, minimum: int = 1) -> Callable[[str], int]:
    """A whole number from ``minimum`` to ``maximum``."""
    return checked(lambda raw: as_count(int(raw), "value", minimum=minimum, maximum=maximum), what)


def text_option(what: str, *, max_length: int) -> Callable[[str], str]:
    """Text the database can store (no lone surrogates from undecodable bytes)."""

    def parse(raw: str) -> str:
        if len(raw) > max_length:
            raise InvalidArgumentError(f"value must be at most {max_length} characters")
        return check_text(raw, "value")

    return checked(parse, what)


def uuid_option(what: str) -> Callable[[str], str]:
    """A UUID (kept as the text given)."""

    def parse(raw: str) -> str:
        as_uuid(raw, "value")
        return raw

    return checked(parse, what)


def queues_option(raw: str) -> list[str]:
    """Comma-separated queue names, each a valid queue."""
    names = [q.strip() for q in raw.split(",") if q.strip()]
    try:
        return list(as_queues(names))
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """``--database-url`` and ``--schema`` (defaults from the environment)."""
    parser.add_argument(
        "--database-url",
        type=text_option("--database-url", max_length=10_000),
        help="PostgreSQL URL (default: JOBRUNNER_DATABASE_URL)",
    )
    parser.add_argument("--schema", help="schema of the jobrunner tables (default: jobrunner)")


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Environment settings with the command line's overrides applied.

    A host that configures jobrunner itself (the Django integration) puts its
    :class:`Settings` on ``args.base_settings``; they then replace the environment's.
    """
    base = getattr(args, "base_settings", None)
    settings = base if isinstance(base, Settings) else Settings.from_env()
    changes: dict[str, Any] = dict(overrides)
    if getattr(args, "database_url", None):
        changes["database_url"] = args.database_url
    if getattr(args, "schema", None):
        changes["schema"] = args.schema
    return dataclasses.replace(settings, **changes)


def run_with_runner(
    args: argparse.Namespace, work: Callable[[JobRunner], Awaitable[T]], **overrides: Any
) -> T:
    """Run ``work`` on a runner built from the settings, closing the runner afterwards.

    The runner opens the database without migrating (``auto_migrate="check"``): these
    commands act on jobs that exist, so a missing or outdated schema (a mistyped
    ``--schema``) is a :class:`ConfigurationError` (exit code 2), never a new empty schema.
    Only ``jobrunner migrate`` and ``jobrunner worker`` migrate. ``overrides`` replace more
    settings (``require_registered=False`` for ``jobs enqueue``).
    """

    async def go() -> T:
        runner = await JobRunnerFactory.create(
            settings_from(args, auto_migrate="check", **overrides)
        )
        try:
            return await work(runner)
        finally:
            await runner.close()

    return asyncio.run(go())


def format_time(value: datetime | None) -> str:
    """A UTC timestamp to the second for tables; ``-`` for none."""
    if value is None:
        return "-"
    # isoformat, not strftime("%Y"): that drops the zero padding of years before 1000.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")


def import_apps(modules: list[str]) -> None:
    """Import the modules that register handlers (``--app``).

    The current directory goes first on ``sys.path`` (as uvicorn and celery do), so
    ``jobrunner-worker --app myapp.jobs`` run next to ``myapp/`` finds it: a console script's
    ``sys.path`` starts with the script's own directory, not the working directory.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in modules:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                importlib.import_module(part)
            except ImportError as exc:
                raise ConfigurationError(f"cannot import app module {part!r}: {exc}") from exc


def print_json(value: Any) -> None:
    """Print ``value`` as JSON (dataclasses, UUIDs and datetimes included)."""
    json.dump(_plain(value), sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
