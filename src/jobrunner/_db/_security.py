"""Optional Row-Level Security: tenant isolation enforced by PostgreSQL itself.

``jobrunner migrate --rls`` (or :func:`install_rls`) enables RLS on every table of the schema.
Which tenants a database role may see is a *grant*, kept in the table ``tenant_roles`` that only
the jobrunner owner can read or write::

    jobrunner tenants grant reporting_a 7c0e...    -- or grant_tenant(conn, schema, role, tenant)

- Tables with a uuid ``tenant`` column (``jobs``, ``job_details``, ``schedules``,
  ``flow_rules``, ``flow_tenant_pass``, ...): a row is visible, and may be written, only when
  its tenant is granted to ``current_user`` or to a role whose privileges ``current_user``
  inherits (``pg_has_role(..., 'USAGE')``). A ``NULL`` tenant (a global flow rule) matches no
  grant: only the owner sees or writes it.
- ``flow_rate_events`` (no tenant column): visible where its ``flow_rules`` row is.
- Every other table (``tenant_roles``, ``flow_state``, ``schema_migrations``): no rows at all.

The session setting ``jobrunner.tenant`` only *narrows*: when set, a role sees just that tenant,
and only if it is granted; setting another tenant shows nothing. ``SET ROLE`` needs role
membership, which PostgreSQL checks, and then the grants of the new ``current_user`` apply.

The grants are read by the ``SECURITY DEFINER`` function ``rls_tenants(name)`` (owned by the
owner, ``search_path`` fixed to ``pg_catalog, pg_temp``); it answers only for a role the
session's login role is a member of, so no role can list another role's tenants.

The policies bind every role except the tables' owner and superusers (RLS is enabled, not
forced), so jobrunner's own connections, which own the tables, keep working across tenants.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from jobrunner._errors import InvalidArgumentError

POLICY = "jobrunner_tenant_isolation"
SETTING = "jobrunner.tenant"
GRANTS = "tenant_roles"
FUNCTION = "rls_tenants"

#: Tables without a tenant column whose rows belong to the row of a tenant table:
#: table -> (parent table, shared key column).
CHILD_TABLES = {"flow_rate_events": ("flow_rules", "rule_id")}


def _predicate(schema: str, column: sql.Composable) -> sql.Composable:
    # Both sides are scalar subqueries, evaluated once per statement (InitPlans), not per row.
    return sql.SQL(
        "{col} = ANY ((SELECT {fn}(current_user))::uuid[]) AND "
        "{col} = coalesce((SELECT nullif(pg_catalog.current_setting({setting}, true), '')::uuid), "
        "{col})"
    ).format(
        col=column,
        fn=sql.Identifier(schema, FUNCTION),
        setting=sql.Literal(SETTING),
    )


async def _tables(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[str, str]:
    """Every base table of ``schema`` -> ``tenant``, ``child`` or ``internal``."""
    cur = await conn.execute(
        "SELECT c.relname, EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
        "AND a.attname = 'tenant' AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
        (schema,),
    )
    kinds = {}
    for name, has_tenant in await cur.fetchall():
        name = str(name)
        if name == GRANTS:  # has a tenant column, but is the owner's alone
            kinds[name] = "internal"
        else:
            kinds[name] = (
                "tenant" if has_tenant else "child" if name in CHILD_TABLES else "internal"
            )
    return kinds


async def _ensure_grants(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """The grants table (RLS on, no policy: owner only) and the function reading it."""
    grants = sql.Identifier(schema, GRANTS)
    await conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (role regrole NOT NULL, tenant uuid NOT NULL, "
            "granted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (role, tenant))"
        ).format(grants)
    )
    await conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(grants))
    await conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(grants))
    fn = sql.Identifier(schema, FUNCTION)
    await conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {fn}(caller name) RETURNS uuid[] "
            "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ "
            "SELECT coalesce(array_agg(DISTINCT g.tenant), '{{}}'::uuid[]) FROM {grants} g "
            "JOIN pg_catalog.pg_roles r ON r.oid = g.role "
            "WHERE pg_catalog.pg_has_role(session_user, caller, 'MEMBER') "
            "AND pg_catalog.pg_has_role(caller, r.oid, 'USAGE') $$"
        ).format(fn=fn, grants=grants)
    )
    await conn.execute(
        sql.SQL("COMMENT ON FUNCTION {}(name) IS {}").format(
            fn,
            sql.Literal(
                "jobrunner RLS: the tenants granted (tenant_roles) to the role or the roles "
                "whose privileges it inherits"
            ),
        )
    )


async def install_rls(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Enable RLS with the tenant policy on every table of ``schema``; idempotent.

    Returns:
        The tenant tables now protected (the others are closed to non-owner roles).
    """
    async with conn.transaction():
        await _ensure_grants(conn, schema)
        kinds = await _tables(conn, schema)
        for table, kind in kinds.items():
            ident = sql.Identifier(schema, table)
            await conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(ident))
            await conn.execute(
                sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), ident)
            )
            if kind == "tenant":
                check = _predicate(schema, sql.Identifier("tenant"))
            elif kind == "child":
                parent, key = CHILD_TABLES[table]
                check = sql.SQL(
                    "EXISTS (SELECT 1 FROM {parent} p WHERE p.{key} = {table}.{key} AND {pred})"
                ).format(
                    parent=sql.Identifier(schema, parent),
                    key=sql.Identifier(key),
                    table=sql.Identifier(table),
                    pred=_predicate(schema, sql.SQL("p.tenant")),
                )
            else:
                continue  # RLS without a policy: no rows for non-owner roles
            await conn.execute(
                sql.SQL("CREATE POLICY {} ON {} USING ({}) WITH CHECK ({})").format(
                    sql.Identifier(POLICY), ident, check, check
                )
            )
    return [t for t, kind in kinds.items() if kind == "tenant"]


async def remove_rls(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Drop the policies and disable RLS again; idempotent. Returns the tenant tables.

    The grants are kept (``install_rls`` applies them again) and stay owner-only.
    """
    async with conn.transaction():
        kinds = await _tables(conn, schema)
        for table in kinds:
            if table == GRANTS:
                continue
            ident = sql.Identifier(schema, table)
            await conn.execute(
                sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), ident)
            )
            await conn.execute(sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(ident))
    return [t for t, kind in kinds.items() if kind == "tenant"]


def _tenant(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgumentError(f"tenant must be a UUID, got {value!r}") from None


async def _role_exists(conn: psycopg.AsyncConnection[Any], role: str) -> None:
    cur = await conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,))
    if await cur.fetchone() is None:
        raise InvalidArgumentError(f"no database role named {role!r}")


async def grant_tenant(
    conn: psycopg.AsyncConnection[Any], schema: str, role: str, tenant: uuid.UUID | str
) -> bool:
    """Let ``role`` (and roles inheriting its privileges) see ``tenant``'s rows under RLS.

    Run as the owner of the jobrunner tables. Returns whether the grant is new.
    """
    tenant = _tenant(tenant)
    async with conn.transaction():
        await _role_exists(conn, role)
        await _ensure_grants(conn, schema)
        cur = await conn.execute(
            sql.SQL(
                "INSERT INTO {} (role, tenant) VALUES (%s::regrole, %s) ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(schema, GRANTS)),
            (sql.Identifier(role).as_string(None), tenant),
        )
        return cur.rowcount == 1


async def revoke_tenant(
    conn: psycopg.AsyncConnection[Any], schema: str, role: str, tenant: uuid.UUID | str
) -> bool:
    """Withdraw a :func:`grant_tenant`; returns whether there was one."""
    tenant = _tenant(tenant)
    async with conn.transaction():
        await _role_exists(conn, role)
        await _ensure_grants(conn, schema)
        cur = await conn.execute(
            sql.SQL("DELETE FROM {} WHERE role = %s::regrole AND tenant = %s").format(
                sql.Identifier(schema, GRANTS)
            ),
            (sql.Identifier(role).as_string(None), tenant),
        )
        return cur.rowcount > 0


async def list_grants(
    conn: psycopg.AsyncConnection[Any], schema: str
) -> list[tuple[str, uuid.UUID]]:
    """Every ``(role, tenant)`` grant, ordered (roles dropped since are left out)."""
    async with conn.transaction():
        await _ensure_grants(conn, schema)
        cur = await conn.execute(
            sql.SQL(
                "SELECT r.rolname, g.tenant FROM {} g JOIN pg_catalog.pg_roles r "
                "ON r.oid = g.role ORDER BY 1, 2"
            ).format(sql.Identifier(schema, GRANTS))
        )
        return [(str(role), tenant) for role, tenant in await cur.fetchall()]
