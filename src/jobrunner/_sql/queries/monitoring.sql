-- Monitoring reads and history maintenance (jobrunner._db._monitoring).
-- Markers in comments are replaced from a fixed set of SQL fragments by _monitoring.py (never
-- with user text): /*tenant*/ becomes "AND tenant = %(tenant)s" for a tenant-scoped view and
-- is dropped for the ALL_TENANTS view, so each variant gets a plan that uses its index.

-- name: monitoring_metrics
WITH counts AS (
    SELECT status::text AS status, runner_type, count(*)::bigint AS n
    FROM {schema}.jobs
    WHERE true /*tenant*/
    GROUP BY status, runner_type
), per_minute AS (
    SELECT extract(epoch FROM date_trunc('minute', completed_at))::bigint AS minute,
           status::text AS status, count(*)::bigint AS n
    FROM {schema}.jobs
    WHERE status IN ('completed', 'failed', 'cancelled')
      AND completed_at >= date_trunc('minute', now()) - interval '59 minutes'
      AND isfinite(completed_at)  -- a hand-written 'infinity' has no minute (and no epoch)
      AND status IN ('completed', 'failed') /*tenant*/
    GROUP BY 1, 2
)
SELECT
    (SELECT coalesce(jsonb_agg(jsonb_build_array(status, runner_type, n)), '[]'::jsonb)
     FROM counts) AS counts,
    (SELECT count(*) FROM {schema}.jobs
     WHERE status IN ('completed', 'failed', 'cancelled') AND status = 'failed'
       AND completed_at >= now() - interval '24 hours' /*tenant*/) AS failed_24h,
    (SELECT coalesce(jsonb_agg(jsonb_build_array(minute, status, n)), '[]'::jsonb)
     FROM per_minute) AS per_minute,
    (SELECT extract(epoch FROM now() - min(run_at))::float8 FROM {schema}.jobs
     WHERE status IN ('pending', 'queued', 'retrying') AND run_at <= now()
       AND isfinite(run_at) /*tenant*/)  -- now() - '-infinity' is an error
        AS oldest_waiting_seconds,
    extract(epoch FROM date_trunc('minute', now()))::bigint AS now_minute

-- name: monitoring_list_jobs
-- The filters marker is replaced by AND-ed fragments from _monitoring (bound values only).
SELECT tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
       external_id, external_run_id, queue, priority, run_at, result, error, progress,
       progress_message, attempts, max_attempts, started_at, completed_at, singleton_key,
       schedule_id
FROM {schema}.jobs
WHERE true /*filters*/
ORDER BY created_at DESC NULLS LAST, job_id DESC
LIMIT %(limit)s

-- name: monitoring_retry_job
-- A failed or cancelled job of this backend is queued again with its attempts starting over;
-- the error it had is kept in a 'retry' job_details row. Refused (no row) while another live
-- job holds the same singleton key.
WITH target AS (
    SELECT j.tenant, j.job_id, j.status, j.error, j.attempts, j.metadata
    FROM {schema}.jobs j
    WHERE j.tenant = %(tenant)s AND j.job_id = %(job_id)s
      AND j.status IN ('failed', 'cancelled')
      AND j.runner_type = %(runner_type)s
      AND (j.singleton_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM {schema}.jobs o
            WHERE o.tenant = j.tenant AND o.singleton_key = j.singleton_key
              AND o.status IN ('pending', 'queued', 'processing', 'retrying')))
    FOR UPDATE
), requeued AS (
    UPDATE {schema}.jobs j
    SET status = 'queued',
        attempts = 0,
        run_at = now(),
        started_at = NULL,
        completed_at = NULL,
        error = NULL,
        result = NULL,
        progress = 0,
        progress_message = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        updated_at = timezone('utc', now()),
        -- the cancel belonged to the previous run (it stays in the 'retry' row's history)
        metadata = (coalesce(j.metadata, '{{}}'::jsonb)
                    - 'cancel_reason' - 'cancelled_by' - 'cancelled_at')
                   || jsonb_build_object(
                        'retried_count', coalesce((j.metadata ->> 'retried_count')::int, 0) + 1,
                        'last_retried_at', now())
    FROM target t
    WHERE j.tenant = t.tenant AND j.job_id = t.job_id
    RETURNING j.tenant, j.job_id, j.queue, t.status AS previous_status, t.error AS previous_error,
              t.attempts AS previous_attempts, t.metadata AS previous_metadata
), history AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'retry', 'queued', previous_error, timezone('utc', now()),
           previous_attempts,
           jsonb_strip_nulls(jsonb_build_object(
               'previous_status', previous_status::text,
               'requested_by', %(requested_by)s::text,
               'cancel_reason', previous_metadata -> 'cancel_reason',
               'cancelled_by', previous_metadata -> 'cancelled_by'))
    FROM requeued
)
SELECT job_id, queue, pg_notify(%(channel)s, queue) AS notified FROM requeued

-- name: monitoring_clear_batch
-- One batch of clear_history. Markers: a constant status list per scope, the tenant clause as
-- above, and the age clause when older_than is given.
WITH doomed AS (
    SELECT tenant, job_id FROM {schema}.jobs
    WHERE status IN (/*statuses*/) /*tenant*/ /*age*/
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
-- jobs has no foreign keys pointing at it (0009): the job's steps, and a removed schedule's
-- definition and fired ticks with its tracker, go in the same statement. One row per job.
, gone AS (
    DELETE FROM {schema}.jobs j
    USING doomed d
    WHERE j.tenant = d.tenant AND j.job_id = d.job_id AND j.status IN (/*statuses*/)
    RETURNING j.tenant, j.job_id
), gone_steps AS (
    DELETE FROM {schema}.job_details s USING gone g
    WHERE s.tenant = g.tenant AND s.job_id = g.job_id
), gone_schedules AS (
    DELETE FROM {schema}.schedules s USING gone g
    WHERE s.tenant = g.tenant AND s.schedule_id = g.job_id
), gone_ticks AS (
    DELETE FROM {schema}.schedule_ticks t USING gone g
    WHERE t.tenant = g.tenant AND t.schedule_id = g.job_id
), gone_edges AS (
    -- its dependency edges (0012); those naming it as a dependency go with their dependent
    DELETE FROM {schema}.job_dependencies e USING gone g
    WHERE e.tenant = g.tenant AND e.job_id = g.job_id
)
SELECT job_id FROM gone

-- name: monitoring_queue_depth
-- Live jobs per queue, status and runner type (the Prometheus gauges), with the age of the
-- oldest due job still waiting. Only live rows are read (a backlog, never the history).
SELECT queue, status::text AS status, runner_type, NULL::uuid AS tenant,
       count(*)::bigint AS jobs,
       extract(epoch FROM now() - min(run_at) FILTER (
           WHERE status IN ('pending', 'queued', 'retrying') AND run_at <= now()
                 AND isfinite(run_at)))::float8 AS oldest_due_seconds
FROM {schema}.jobs
WHERE status IN ('pending', 'queued', 'processing', 'retrying', 'waiting') /*tenant*/
GROUP BY queue, status, runner_type

-- name: monitoring_queue_depth_by_tenant
-- As monitoring_queue_depth, one row per tenant too (asked for explicitly: many series).
SELECT queue, status::text AS status, runner_type, tenant,
       count(*)::bigint AS jobs,
       extract(epoch FROM now() - min(run_at) FILTER (
           WHERE status IN ('pending', 'queued', 'retrying') AND run_at <= now()
                 AND isfinite(run_at)))::float8 AS oldest_due_seconds
FROM {schema}.jobs
WHERE status IN ('pending', 'queued', 'processing', 'retrying', 'waiting') /*tenant*/
GROUP BY queue, status, runner_type, tenant
