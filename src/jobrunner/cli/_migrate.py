"""``jobrunner migrate``: apply pending schema migrations."""

from __future__ import annotations

import argparse
import asyncio

from jobrunner.cli._common import add_database_options, settings_from


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser("migrate", help="apply pending schema migrations (idempotent)")
    add_database_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Apply migrations and report what was applied."""
    from jobrunner._db._database import Database

    settings = settings_from(args)

    async def go() -> list[int]:
        db = Database(settings.require_database_url(), schema=settings.schema)
        return await db.migrate()

    applied = asyncio.run(go())
    if applied:
        print(f"applied migrations {', '.join(f'{v:04d}' for v in applied)} "
              f"to schema {settings.schema}")
    else:
        print(f"schema {settings.schema} is up to date")
    return 0
