"""Optional Row-Level Security: tenant isolation enforced by PostgreSQL itself.

``jobrunner migrate --rls`` (or :func:`install_rls`) enables RLS on ``jobs``, ``job_details``
and every other table of the schema with a ``NOT NULL`` uuid ``tenant`` column, with one
policy per table: a row is visible, and may be written, only when its ``tenant`` equals the
session setting ``jobrunner.tenant``::

    SET jobrunner.tenant = '7c0e...';          -- or SET LOCAL inside a transaction
    SELECT * FROM jobrunner.jobs;              -- only that tenant's rows

Without the setting a restricted role sees no rows at all. The policies bind every role except
the tables' owner and superusers (RLS is enabled, not forced), so jobrunner's own connections,
which own the tables, keep working across tenants; point reporting tools, tenant-facing
services and ad-hoc SQL at a separate, non-owner role. The setting is a filter, not a
credential: any session may ``SET`` it, so a role given to an untrusted party must only ever
run SQL that your code generates after authenticating the tenant.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

POLICY = "jobrunner_tenant_isolation"
SETTING = "jobrunner.tenant"

_PREDICATE = sql.SQL("tenant = nullif(current_setting({}, true), '')::uuid").format(
    sql.Literal(SETTING)
)


async def tenant_tables(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Tables of ``schema`` holding tenant rows (a ``NOT NULL`` uuid ``tenant`` column)."""
    cur = await conn.execute(
        "SELECT c.table_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = %s AND c.column_name = 'tenant' AND c.data_type = 'uuid' "
        "AND c.is_nullable = 'NO' AND t.table_type = 'BASE TABLE' ORDER BY 1",
        (schema,),
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def install_rls(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Enable RLS with the tenant policy on every tenant table; idempotent.

    Returns:
        The tables now protected.
    """
    tables = await tenant_tables(conn, schema)
    async with conn.transaction():
        for table in tables:
            ident = sql.Identifier(schema, table)
            await conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(ident))
            await conn.execute(
                sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), ident)
            )
            await conn.execute(
                sql.SQL("CREATE POLICY {} ON {} USING ({}) WITH CHECK ({})").format(
                    sql.Identifier(POLICY), ident, _PREDICATE, _PREDICATE
                )
            )
    return tables


async def remove_rls(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Drop the tenant policy and disable RLS again; idempotent. Returns the tables."""
    tables = await tenant_tables(conn, schema)
    async with conn.transaction():
        for table in tables:
            ident = sql.Identifier(schema, table)
            await conn.execute(
                sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), ident)
            )
            await conn.execute(sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(ident))
    return tables
