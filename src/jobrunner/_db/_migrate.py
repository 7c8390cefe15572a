"""Versioned migrations: numbered SQL files applied in order, once, under an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger("jobrunner.migrate")

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    text: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("jobrunner._sql").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def _lock_key(schema: str) -> str:
    return f"jobrunner-migrate:{schema}"


async def migrate(
    conn: psycopg.AsyncConnection[Any], schema: str, *, target: int | None = None
) -> list[int]:
    """Apply pending migrations to ``schema``; safe when several processes run it at once.

    Each migration runs in its own transaction holding a transaction-level advisory lock, so
    concurrent callers serialise and skip what another already applied.

    Returns:
        The versions applied by this call.
    """
    applied: list[int] = []
    ident = sql.Identifier(schema)
    for migration in available_migrations():
        if target is not None and migration.version > target:
            break
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_lock_key(schema),))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                    " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ).format(ident)
            )
            cur = await conn.execute(
                sql.SQL("SELECT 1 FROM {}.schema_migrations WHERE version = %s").format(ident),
                (migration.version,),
            )
            if await cur.fetchone():
                continue
            await conn.execute(
                sql.SQL("SELECT set_config('search_path', %s, true)"),
                (sql.Identifier(schema).as_string(None) + ", public",),
            )
            await conn.execute(migration.text.encode())
            await conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(
                    ident
                ),
                (migration.version, migration.name),
            )
            applied.append(migration.version)
            logger.info(
                "applied migration %04d_%s to schema %s", migration.version, migration.name, schema
            )
    return applied


async def current_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The highest applied migration version, 0 when none."""
    cur = await conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (sql.Identifier(schema).as_string(None) + ".schema_migrations",),
    )
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(
            sql.Identifier(schema)
        )
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
