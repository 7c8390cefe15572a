-- The migrator's own bookkeeping (jobrunner._db._migrate): which numbered migrations a schema
-- has, under a transaction-level advisory lock so concurrent callers serialise.

-- name: migrator_lock
SELECT pg_advisory_xact_lock(hashtext(%(key)s))

-- name: migrator_prepare
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)

-- name: migrator_is_applied
SELECT 1 FROM {schema}.schema_migrations WHERE version = %(version)s

-- name: migrator_search_path
-- The migration files name their tables unqualified.
SELECT set_config('search_path', %(path)s, true)

-- name: migrator_record
INSERT INTO {schema}.schema_migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: migrator_schema_exists
SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %(schema_name)s

-- name: migrator_has_table
SELECT to_regclass(%(table)s) IS NOT NULL

-- name: migrator_version
SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations

-- name: migrator_applied
-- Under row-level security a non-owner role sees no rows: say so rather than "none applied".
SELECT coalesce(array_agg(version), '{{}}'), row_security_active(%(table)s::regclass)
FROM {schema}.schema_migrations
