-- Optional Row-Level Security (jobrunner._db._security; docs/guarantees.md). Statements that
-- name a table take it as an identifier ({table}; {parent} and {key} for child tables); the
-- policy is "jobrunner_tenant_isolation", the grants table "tenant_roles", the function
-- "rls_tenants" and the session setting "jobrunner.tenant".

-- name: rls_table_kinds
-- Every base table of the schema and whether it has a uuid tenant column.
SELECT c.relname,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = 'tenant'
                 AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped) AS has_tenant
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
ORDER BY 1

-- name: rls_create_grants
CREATE TABLE IF NOT EXISTS {schema}.tenant_roles (
    role regrole NOT NULL,
    tenant uuid NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, tenant)
)

-- name: rls_close_grants
-- RLS on and no policy: only the owner reads or writes the grants.
REVOKE ALL ON {schema}.tenant_roles FROM PUBLIC;
ALTER TABLE {schema}.tenant_roles ENABLE ROW LEVEL SECURITY

-- name: rls_create_function
-- The tenants granted to the role or the roles whose privileges it inherits; answers only for a
-- role the session's login role is a member of.
CREATE OR REPLACE FUNCTION {schema}.rls_tenants(caller name) RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(DISTINCT g.tenant), '{{}}'::uuid[]) FROM {schema}.tenant_roles g
    JOIN pg_catalog.pg_roles r ON r.oid = g.role
    WHERE pg_catalog.pg_has_role(session_user, caller, 'MEMBER')
      AND pg_catalog.pg_has_role(caller, r.oid, 'USAGE')
$$;
COMMENT ON FUNCTION {schema}.rls_tenants(name) IS
    'jobrunner RLS: the tenants granted (tenant_roles) to the role or the roles whose privileges it inherits'

-- name: rls_enable
ALTER TABLE {schema}.{table} ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS jobrunner_tenant_isolation ON {schema}.{table}

-- name: rls_disable
DROP POLICY IF EXISTS jobrunner_tenant_isolation ON {schema}.{table};
ALTER TABLE {schema}.{table} DISABLE ROW LEVEL SECURITY

-- name: rls_tenant_policy
-- A row is visible and writable when its tenant is granted to current_user and matches the
-- session setting when one is set (it only narrows). Both sides are scalar subqueries,
-- evaluated once per statement (InitPlans), not per row.
CREATE POLICY jobrunner_tenant_isolation ON {schema}.{table}
USING (
    tenant = ANY ((SELECT {schema}.rls_tenants(current_user))::uuid[])
    AND tenant = coalesce((SELECT nullif(pg_catalog.current_setting('jobrunner.tenant', true), '')::uuid), tenant)
)
WITH CHECK (
    tenant = ANY ((SELECT {schema}.rls_tenants(current_user))::uuid[])
    AND tenant = coalesce((SELECT nullif(pg_catalog.current_setting('jobrunner.tenant', true), '')::uuid), tenant)
)

-- name: rls_child_policy
-- A row without a tenant column is visible where its parent row is.
CREATE POLICY jobrunner_tenant_isolation ON {schema}.{table}
USING (EXISTS (
    SELECT 1 FROM {schema}.{parent} p WHERE p.{key} = {table}.{key}
      AND p.tenant = ANY ((SELECT {schema}.rls_tenants(current_user))::uuid[])
      AND p.tenant = coalesce((SELECT nullif(pg_catalog.current_setting('jobrunner.tenant', true), '')::uuid), p.tenant)
))
WITH CHECK (EXISTS (
    SELECT 1 FROM {schema}.{parent} p WHERE p.{key} = {table}.{key}
      AND p.tenant = ANY ((SELECT {schema}.rls_tenants(current_user))::uuid[])
      AND p.tenant = coalesce((SELECT nullif(pg_catalog.current_setting('jobrunner.tenant', true), '')::uuid), p.tenant)
))

-- name: rls_role_exists
SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(role)s

-- name: rls_grant
INSERT INTO {schema}.tenant_roles (role, tenant) VALUES (%(role)s::regrole, %(tenant)s)
ON CONFLICT DO NOTHING

-- name: rls_revoke
DELETE FROM {schema}.tenant_roles WHERE role = %(role)s::regrole AND tenant = %(tenant)s

-- name: rls_list_grants
-- Roles dropped since their grant are left out.
SELECT r.rolname, g.tenant FROM {schema}.tenant_roles g
JOIN pg_catalog.pg_roles r ON r.oid = g.role
ORDER BY 1, 2
