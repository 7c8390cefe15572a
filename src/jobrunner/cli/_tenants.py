"""``jobrunner tenants grant|revoke|list``: which database roles see which tenants under RLS.

Only meaningful with ``jobrunner migrate --rls``; run as the owner of the jobrunner tables.
"""

from __future__ import annotations

import argparse
import asyncio

import psycopg

from jobrunner._db import _security
from jobrunner._db._errors import translate_errors
from jobrunner.cli._common import add_database_options, settings_from, text_option, uuid_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser(
        "tenants", help="grant database roles the tenants they may see under row-level security"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("grant", "let ROLE (and roles inheriting its privileges) see TENANT's rows"),
        ("revoke", "withdraw such a grant"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument(
            "role",
            metavar="ROLE",
            type=text_option("ROLE", max_length=63),
            help="a database role (not the tables' owner)",
        )
        one.add_argument(
            "tenant", metavar="TENANT", type=uuid_option("TENANT"), help="a tenant UUID"
        )
        add_database_options(one)
        one.set_defaults(handler=run)
    listing = actions.add_parser("list", help="print every grant: ROLE TENANT")
    add_database_options(listing)
    listing.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Apply or list grants."""
    settings = settings_from(args)

    async def go() -> int:
        with translate_errors():
            async with await psycopg.AsyncConnection.connect(
                settings.require_database_url(), autocommit=True
            ) as conn:
                if args.action == "list":
                    for role, tenant in await _security.list_grants(conn, settings.schema):
                        print(f"{role} {tenant}")
                    return 0
                if args.action == "grant":
                    new = await _security.grant_tenant(
                        conn, settings.schema, args.role, args.tenant
                    )
                    print(f"granted {args.tenant} to {args.role}" + ("" if new else " (already)"))
                    return 0
                had = await _security.revoke_tenant(conn, settings.schema, args.role, args.tenant)
                print(f"revoked {args.tenant} from {args.role}" if had else "no such grant")
                return 0 if had else 1

    return asyncio.run(go())
