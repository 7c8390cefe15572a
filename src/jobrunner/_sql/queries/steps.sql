-- Durable steps (ctx.run_step): job_details rows marked metadata {"durable": true}, shared by
-- the PostgreSQL worker and the Temporal activity. Every statement is fenced like start_step:
-- only the attempt holding the lease of a 'processing' job reads or writes a step, and
-- FOR SHARE orders it against a concurrent outcome (no attempt row: the attempt is over).

-- name: begin_durable_step
-- The job's completed row of this step (written by any attempt) or, when there is none, a new
-- 'processing' row. `holds` false: fenced, nothing read or written.
WITH attempt AS (
    SELECT tenant, job_id FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
      AND status = 'processing'
    FOR SHARE
), stored AS (
    SELECT d.result FROM {schema}.job_details d
    JOIN attempt a ON d.tenant = a.tenant AND d.job_id = a.job_id
    WHERE d.step_name = %(step_name)s AND d.status = 'completed'
      AND (d.metadata ->> 'durable') = 'true'
    LIMIT 1
), started AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, %(step_name)s, 'processing', timezone('utc', now()), %(attempt)s,
           jsonb_build_object('started_at', now(), 'durable', true)
    FROM attempt
    WHERE NOT EXISTS (SELECT 1 FROM stored)
    RETURNING detail_id
)
SELECT EXISTS (SELECT 1 FROM attempt) AS holds,
       EXISTS (SELECT 1 FROM stored) AS stored,
       (SELECT result FROM stored) AS result,
       (SELECT detail_id FROM started) AS detail_id

-- name: complete_durable_step
-- The step's result, committed with the row (one statement, autocommit). No row returned:
-- the attempt is over and nothing was written.
WITH attempt AS (
    SELECT tenant, job_id FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
      AND status = 'processing'
    FOR SHARE
)
UPDATE {schema}.job_details d
SET status = 'completed',
    result = %(result)s::jsonb,
    processed_at = timezone('utc', now()),
    metadata = coalesce(d.metadata, '{{}}'::jsonb)
               || jsonb_build_object('finished_at', now(), 'tries', %(tries)s::int,
                                     'duration_ms', round(extract(epoch FROM
                                        now() - (d.metadata ->> 'started_at')::timestamptz) * 1000))
FROM attempt a
WHERE d.tenant = a.tenant AND d.job_id = a.job_id AND d.detail_id = %(detail_id)s
  AND d.status = 'processing'
RETURNING d.detail_id
