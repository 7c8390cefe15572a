-- Filter fragments that jobrunner._db._monitoring adds to monitoring_list_jobs (at /*filters*/)
-- and monitoring_clear_batch (at /*tenant*/, /*age*/), only for the filters a call sets: each
-- query keeps the plan of its own filters. Every value is a bound parameter.

-- name: filter_tenant
AND tenant = %(tenant)s

-- name: filter_statuses
AND status = ANY(%(statuses)s::{schema}.job_status[])

-- name: filter_name
AND type = %(name)s

-- name: filter_runner_type
AND runner_type = %(runner_type)s

-- name: filter_created_after
AND created_at >= %(created_after)s

-- name: filter_created_before
AND created_at < %(created_before)s

-- name: filter_search
AND (type ILIKE %(pattern)s ESCAPE '\' OR job_id::text ILIKE %(pattern)s ESCAPE '\'
     OR (error ->> 'message') ILIKE %(pattern)s ESCAPE '\'
     OR (error ->> 'type') ILIKE %(pattern)s ESCAPE '\')

-- name: filter_after_null_created
-- Rows without created_at sort last (NULLS LAST); only those remain.
AND created_at IS NULL AND job_id < %(cursor_id)s

-- name: filter_after_row
-- A row comparison keeps the keyset one index range.
AND (created_at, job_id) < (%(cursor_at)s, %(cursor_id)s)

-- name: filter_after_edge_row
-- After a row whose created_at Python cannot hold: its stored value, looked up by id
-- ('-infinity'/'infinity' if the row is gone by then); the lookup is tenant-scoped when the
-- listing is (filter_after_edge_row_of_tenant).
AND (created_at, job_id) < (coalesce((SELECT c.created_at FROM {schema}.jobs c
                                      WHERE c.job_id = %(cursor_id)s LIMIT 1),
                                     %(cursor_edge)s::timestamp), %(cursor_id)s)

-- name: filter_after_edge_row_of_tenant
AND (created_at, job_id) < (coalesce((SELECT c.created_at FROM {schema}.jobs c
                                      WHERE c.job_id = %(cursor_id)s AND c.tenant = %(tenant)s
                                      LIMIT 1),
                                     %(cursor_edge)s::timestamp), %(cursor_id)s)

-- name: filter_finished_before
AND (completed_at < %(cutoff)s OR (completed_at IS NULL AND created_at < %(cutoff_utc)s))
