"""``jobrunner migrate``: apply pending schema migrations."""

from __future__ import annotations

import argparse
import asyncio

import psycopg

from jobrunner._db import _security
from jobrunner._db._database import Database
from jobrunner._db._errors import translate_errors
from jobrunner.cli._common import add_database_options, settings_from


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser("migrate", help="apply pending schema migrations (idempotent)")
    rls = parser.add_mutually_exclusive_group()
    rls.add_argument(
        "--rls",
        action="store_true",
        help="also install Row-Level Security: other roles than the tables' owner see only "
        "the rows of tenants granted to them (jobrunner tenants grant ROLE TENANT)",
    )
    rls.add_argument("--drop-rls", action="store_true", help="remove those policies again")
    add_database_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Apply migrations and report what was applied."""
    settings = settings_from(args)

    async def go() -> list[int]:
        db = Database(settings.require_database_url(), schema=settings.schema)
        applied = await db.migrate()
        if getattr(args, "rls", False) or getattr(args, "drop_rls", False):
            await _rls(db, install=bool(args.rls))
        return applied

    applied = asyncio.run(go())
    if applied:
        print(
            f"applied migrations {', '.join(f'{v:04d}' for v in applied)} "
            f"to schema {settings.schema}"
        )
    else:
        print(f"schema {settings.schema} is up to date")
    return 0


async def _rls(db: Database, *, install: bool) -> None:
    with translate_errors():
        async with await psycopg.AsyncConnection.connect(db.conninfo, autocommit=True) as conn:
            if install:
                tables = await _security.install_rls(conn, db.schema)
                print(
                    f"row-level security on {', '.join(tables)}: rows visible to other roles "
                    "than the owner only for the tenants granted to them "
                    "(jobrunner tenants grant ROLE TENANT)"
                )
            else:
                tables = await _security.remove_rls(conn, db.schema)
                print(f"row-level security removed from {', '.join(tables)}")
