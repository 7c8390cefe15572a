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

from jobrunner._db._queries import queries_for
from jobrunner._errors import InvalidArgumentError

GRANTS = "tenant_roles"

#: Tables without a tenant column whose rows belong to the row of a tenant table:
#: table -> (parent table, shared key column).
CHILD_TABLES = {"flow_rate_events": ("flow_rules", "rule_id")}


async def _tables(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[str, str]:
    """Every base table of ``schema`` -> ``tenant``, ``child`` or ``internal``."""
    cur = await conn.execute(queries_for(schema).rls_table_kinds, {"schema": schema})
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
    q = queries_for(schema)
    for statement in (q.rls_create_grants, q.rls_close_grants, q.rls_create_function):
        await conn.execute(statement)


async def install_rls(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Enable RLS with the tenant policy on every table of ``schema``; idempotent.

    Returns:
        The tenant tables now protected (the others are closed to non-owner roles).
    """
    q = queries_for(schema)
    async with conn.transaction():
        await _ensure_grants(conn, schema)
        kinds = await _tables(conn, schema)
        for table, kind in kinds.items():
            await conn.execute(q.with_identifiers("rls_enable", table=table))
            if kind == "tenant":
                await conn.execute(q.with_identifiers("rls_tenant_policy", table=table))
            elif kind == "child":
                parent, key = CHILD_TABLES[table]
                await conn.execute(
                    q.with_identifiers("rls_child_policy", table=table, parent=parent, key=key)
                )
            # internal: RLS without a policy, so no rows for non-owner roles
    return [t for t, kind in kinds.items() if kind == "tenant"]


async def remove_rls(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Drop the policies and disable RLS again; idempotent. Returns the tenant tables.

    The grants are kept (``install_rls`` applies them again) and stay owner-only.
    """
    q = queries_for(schema)
    async with conn.transaction():
        kinds = await _tables(conn, schema)
        for table in kinds:
            if table == GRANTS:
                continue
            await conn.execute(q.with_identifiers("rls_disable", table=table))
    return [t for t, kind in kinds.items() if kind == "tenant"]


def _tenant(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgumentError(f"tenant must be a UUID, got {value!r}") from None


async def _role_exists(conn: psycopg.AsyncConnection[Any], schema: str, role: str) -> None:
    cur = await conn.execute(queries_for(schema).rls_role_exists, {"role": role})
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
        await _role_exists(conn, schema, role)
        await _ensure_grants(conn, schema)
        cur = await conn.execute(
            queries_for(schema).rls_grant,
            {"role": sql.Identifier(role).as_string(None), "tenant": tenant},
        )
        return cur.rowcount == 1


async def revoke_tenant(
    conn: psycopg.AsyncConnection[Any], schema: str, role: str, tenant: uuid.UUID | str
) -> bool:
    """Withdraw a :func:`grant_tenant`; returns whether there was one."""
    tenant = _tenant(tenant)
    async with conn.transaction():
        await _role_exists(conn, schema, role)
        await _ensure_grants(conn, schema)
        cur = await conn.execute(
            queries_for(schema).rls_revoke,
            {"role": sql.Identifier(role).as_string(None), "tenant": tenant},
        )
        return cur.rowcount > 0


async def list_grants(
    conn: psycopg.AsyncConnection[Any], schema: str
) -> list[tuple[str, uuid.UUID]]:
    """Every ``(role, tenant)`` grant, ordered (roles dropped since are left out)."""
    async with conn.transaction():
        await _ensure_grants(conn, schema)
        cur = await conn.execute(queries_for(schema).rls_list_grants)
        return [(str(role), tenant) for role, tenant in await cur.fetchall()]
