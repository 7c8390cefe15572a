-- Queries on the shared jobs / job_details tables, used by every backend.
-- {schema} is the quoted schema identifier; every value is a bound parameter.

-- name: insert_job
-- Straight into the live partition (0009): no routing, and its indexes are the arbiters.
WITH inserted AS (
    INSERT INTO {schema}.jobs_live (
        tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
        external_id, queue, priority, run_at, data, max_attempts, singleton_key, schedule_id,
        policy, parent_job_id
    )
    VALUES (
        %(tenant)s, %(job_id)s, %(name)s, %(metadata)s,
        (CASE WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= now()
              THEN 'queued' ELSE 'pending' END)::{schema}.job_status,
        timezone('utc', now()), timezone('utc', now()), %(user_id)s, %(runner_type)s,
        %(external_id)s, %(queue)s, %(priority)s, coalesce(%(run_at)s::timestamptz, now()),
        %(data)s, %(max_attempts)s, %(singleton_key)s, %(schedule_id)s, %(policy)s,
        %(parent_job_id)s
    )
    ON CONFLICT (tenant, singleton_key)
        WHERE singleton_key IS NOT NULL
          AND status IN ('pending', 'queued', 'processing', 'retrying')
        DO NOTHING
    RETURNING job_id, status, queue
)
SELECT job_id,
       status,
       CASE WHEN %(notify)s::boolean THEN pg_notify(%(channel)s, queue) END AS notified
FROM inserted

-- name: job_exists
SELECT 1 FROM {schema}.jobs WHERE tenant = %(tenant)s AND job_id = %(job_id)s

-- name: find_singleton
SELECT job_id, status FROM {schema}.jobs
WHERE tenant = %(tenant)s AND singleton_key = %(singleton_key)s
  AND status IN ('pending', 'queued', 'processing', 'retrying')

-- name: get_job
SELECT tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
       external_id, external_run_id, queue, priority, run_at, result, error, progress,
       progress_message, attempts, max_attempts, started_at, completed_at, singleton_key,
       schedule_id
FROM {schema}.jobs
WHERE tenant = %(tenant)s AND job_id = %(job_id)s

-- name: cancel_job
WITH prev AS (
    SELECT tenant, job_id, status, attempts FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s
      AND status IN ('pending', 'queued', 'processing', 'retrying', 'waiting')
      AND runner_type = %(runner_type)s
    FOR UPDATE
), cancelled AS (
    UPDATE {schema}.jobs j
    SET status = 'cancelled',
        -- fences the cancelled attempt: its late outcome or step writes match no row
        lease_token = j.lease_token + 1,
        completed_at = now(),
        updated_at = timezone('utc', now()),
        lease_expires_at = NULL,
        worker_id = NULL,
        error = jsonb_build_object('type', 'cancelled', 'message',
                                   coalesce(%(reason)s::text, 'cancelled'), 'traceback', NULL),
        metadata = coalesce(j.metadata, '{{}}'::jsonb)
                   || jsonb_strip_nulls(jsonb_build_object('cancel_reason', %(reason)s::text,
                                                           'cancelled_by', %(cancelled_by)s::text))
    FROM prev
    WHERE j.tenant = prev.tenant AND j.job_id = prev.job_id
    RETURNING j.tenant, j.job_id, prev.status AS previous_status, j.attempts, j.lease_token
), attempt_row AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'attempt', 'cancelled', timezone('utc', now()), attempts,
           jsonb_strip_nulls(jsonb_build_object('reason', %(reason)s::text,
                                                'cancelled_by', %(cancelled_by)s::text))
    FROM cancelled WHERE previous_status = 'processing'
), closed_steps AS (
    -- the new token fences the cancelled attempt, so it can no longer close its own steps
    UPDATE {schema}.job_details d
    SET status = 'cancelled', processed_at = timezone('utc', now()),
        result = jsonb_build_object('type', 'cancelled', 'message',
                                    coalesce(%(reason)s::text, 'cancelled'), 'traceback', NULL),
        metadata = coalesce(d.metadata, '{{}}'::jsonb) || jsonb_build_object('finished_at', now())
    FROM cancelled c
    WHERE d.tenant = c.tenant AND d.job_id = c.job_id AND d.status = 'processing'
      AND c.previous_status = 'processing'
)
-- payload `job_id:token`: a worker stops only attempts older than the cancel (a retry of the
-- job claimed since then by the same worker has a newer token and keeps running)
SELECT job_id, previous_status,
       pg_notify(%(channel)s, job_id::text || ':' || lease_token::text) AS notified
FROM cancelled

-- name: save_progress
UPDATE {schema}.jobs
SET progress = %(progress)s, progress_message = %(message)s, updated_at = timezone('utc', now())
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
  AND status = 'processing'

-- name: start_step
-- Fenced like save_progress: only the attempt holding the lease of a 'processing' job writes
-- a step. FOR SHARE orders it against a concurrent outcome (the outcome waits, or the step is
-- re-checked against the committed outcome and dropped); no row means the attempt is over.
WITH attempt AS (
    SELECT tenant, job_id FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
      AND status = 'processing'
    FOR SHARE
)
INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at, retry_count,
                                  metadata)
SELECT tenant, job_id, %(step_name)s, 'processing', timezone('utc', now()), %(attempt)s,
       jsonb_build_object('started_at', now())
FROM attempt
RETURNING detail_id

-- name: finish_step
WITH attempt AS (
    SELECT tenant, job_id FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
      AND status = 'processing'
    FOR SHARE
)
UPDATE {schema}.job_details d
SET status = %(status)s::{schema}.job_status,
    result = %(result)s,
    processed_at = timezone('utc', now()),
    metadata = coalesce(d.metadata, '{{}}'::jsonb)
               || jsonb_build_object('finished_at', now(),
                                     'duration_ms', round(extract(epoch FROM
                                        now() - (d.metadata ->> 'started_at')::timestamptz) * 1000))
FROM attempt a
WHERE d.tenant = a.tenant AND d.job_id = a.job_id AND d.detail_id = %(detail_id)s
  AND d.status = 'processing'

-- name: insert_detail
INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                  retry_count, metadata)
VALUES (%(tenant)s, %(job_id)s, %(step_name)s, %(status)s::{schema}.job_status, %(result)s,
        timezone('utc', now()), %(retry_count)s, %(metadata)s)
RETURNING detail_id

-- name: list_details
SELECT detail_id, step_name, status, result, processed_at, retry_count, metadata
FROM {schema}.job_details
WHERE tenant = %(tenant)s AND job_id = %(job_id)s
ORDER BY processed_at, detail_id

-- name: get_job_data
SELECT data, parent_job_id FROM {schema}.jobs WHERE tenant = %(tenant)s AND job_id = %(job_id)s

-- name: ping
-- The health check: the server answers a trivial statement.
SELECT 1
