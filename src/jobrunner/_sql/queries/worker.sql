-- The PostgreSQL backend's worker: claim, heartbeat, finish, rescue, release.
-- Every outcome is fenced by (tenant, job_id, lease_token, status = 'processing'): a worker that
-- lost its lease can change nothing.
-- listen_channel has no comment of its own on purpose: monitoring (and the chaos suite) finds
-- listener connections by pg_stat_activity.query starting with LISTEN. LISTEN takes no
-- parameters: its {channel} is an identifier (Queries.with_identifiers).

-- name: claim_jobs
-- Performance (docs/performance.md): one ordered index scan of jobs_claim_idx per queue
-- (`queue = ANY(array)` made PostgreSQL 15 scan and sort every live row), and the UPDATE
-- finds the locked rows by ctid (a hash join against a seq scan of jobs was chosen before).
-- The ctids are stable: the rows stay locked by this statement until it commits (LockRows
-- returns the version it locked). No status re-check in the UPDATE on purpose: it would let
-- the planner scan a partial index of all live rows instead of the Tid Scan.
WITH picked AS (
    SELECT p.row_ctid
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT ctid AS row_ctid, priority, run_at, job_id FROM {schema}.jobs
        WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres'
          AND queue = q.name AND run_at <= now()
          -- flow control on (0004_fairness): only claim_jobs_fair may claim, under its lock.
          -- FOR SHARE (docs/fairness.md): the UPDATE that switches flow control on waits
          -- until every plain claim in flight has committed, and a claim that starts while
          -- it is pending waits for it and then reads the new row, so no plain claim can
          -- commit past a rule. One InitPlan, evaluated once per statement.
          AND NOT coalesce((SELECT enabled FROM {schema}.flow_state WHERE id FOR SHARE), false)
        ORDER BY priority DESC, run_at, job_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) p
    ORDER BY p.priority DESC, p.run_at, p.job_id
    LIMIT %(limit)s
)
UPDATE {schema}.jobs j
SET status = 'processing',
    attempts = j.attempts + 1,
    lease_token = j.lease_token + 1,
    worker_id = %(worker_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = now(),
    updated_at = timezone('utc', now())
WHERE j.ctid = ANY(ARRAY(SELECT row_ctid FROM picked))
RETURNING j.tenant, j.job_id, j.type, j.data, j.attempts, j.max_attempts, j.lease_token,
          j.queue, j.metadata, j.schedule_id, j.started_at, j.policy, j.run_at

-- name: next_due_in
SELECT extract(epoch FROM min(run_at) - now())::float8 AS seconds FROM {schema}.jobs
WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres'
  AND queue = ANY(%(queues)s::text[])

-- name: complete_jobs
WITH done AS (
    SELECT * FROM unnest(%(tenants)s::uuid[], %(job_ids)s::uuid[], %(tokens)s::bigint[],
                         %(results)s::text[], %(started)s::timestamptz[],
                         %(durations)s::float8[])
        AS d(tenant, job_id, token, result, started_at, duration_ms)
), updated AS (
    UPDATE {schema}.jobs j
    SET status = 'completed', result = d.result::jsonb, error = NULL, progress = 100,
        completed_at = now(), updated_at = timezone('utc', now()),
        lease_expires_at = NULL, worker_id = NULL
    FROM done d
    WHERE j.tenant = d.tenant AND j.job_id = d.job_id AND j.lease_token = d.token
      -- `::text` on purpose (docs/performance.md): with `status = 'processing'` the planner
      -- could drive the join from jobs_lease_idx, whose row estimate is ~1 whenever ANALYZE
      -- ran with few jobs running; the nested loop then compared every running job with
      -- every outcome (seconds per flush). Batch rows must drive the join through the pkey.
      AND j.status::text = 'processing'
    RETURNING j.tenant, j.job_id, j.attempts, d.started_at, d.duration_ms
)
INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at, retry_count,
                                  metadata)
SELECT tenant, job_id, 'attempt', 'completed', timezone('utc', now()), attempts,
       jsonb_build_object('started_at', started_at, 'duration_ms', duration_ms,
                          'worker_id', %(worker_id)s::text)
FROM updated
RETURNING job_id

-- name: fail_jobs
-- The database enforces the retry policy: a retry is honoured only while attempts remain
-- (attempts < max_attempts); otherwise the job ends `failed`, whatever retry_in the caller sent.
WITH failed AS (
    SELECT * FROM unnest(%(tenants)s::uuid[], %(job_ids)s::uuid[], %(tokens)s::bigint[],
                         %(errors)s::text[], %(retry_in)s::float8[],
                         %(started)s::timestamptz[], %(durations)s::float8[])
        AS f(tenant, job_id, token, error, retry_in, started_at, duration_ms)
), updated AS (
    UPDATE {schema}.jobs j
    SET status = (CASE WHEN f.retry_in IS NULL OR j.attempts >= j.max_attempts THEN 'failed'
                       ELSE 'retrying' END)
                 ::{schema}.job_status,
        error = f.error::jsonb,
        run_at = CASE WHEN f.retry_in IS NULL OR j.attempts >= j.max_attempts THEN j.run_at
                      ELSE now() + make_interval(secs => f.retry_in) END,
        completed_at = CASE WHEN f.retry_in IS NULL OR j.attempts >= j.max_attempts
                            THEN now() END,
        updated_at = timezone('utc', now()),
        lease_expires_at = NULL, worker_id = NULL
    FROM failed f
    WHERE j.tenant = f.tenant AND j.job_id = f.job_id AND j.lease_token = f.token
      AND j.status::text = 'processing'  -- `::text`: see complete_jobs
    RETURNING j.tenant, j.job_id, j.attempts, j.run_at,
              CASE WHEN j.attempts < j.max_attempts THEN f.retry_in END AS retry_in,
              f.error::jsonb AS error,
              f.started_at, f.duration_ms
), closed_steps AS (
    -- Steps the failed attempt left open (a timeout or a cancel stops the handler inside
    -- them, and its own writes are fenced from then on) fail with the attempt's error.
    UPDATE {schema}.job_details d
    SET status = 'failed', result = u.error, processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb)
                   || jsonb_build_object('finished_at', now())
    FROM updated u
    WHERE d.tenant = u.tenant AND d.job_id = u.job_id AND d.status = 'processing'
)
INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                  retry_count, metadata)
SELECT tenant, job_id, 'attempt', 'failed', error, timezone('utc', now()), attempts,
       jsonb_build_object('started_at', started_at, 'duration_ms', duration_ms,
                          'worker_id', %(worker_id)s::text,
                          'next_run_at', CASE WHEN retry_in IS NULL THEN NULL ELSE run_at END)
FROM updated
RETURNING job_id

-- name: heartbeat
UPDATE {schema}.jobs
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE worker_id = %(worker_id)s AND status = 'processing'
RETURNING tenant, job_id, lease_token

-- name: rescue_expired
WITH expired AS (
    SELECT tenant, job_id FROM {schema}.jobs
    WHERE status = 'processing' AND lease_expires_at < now() AND runner_type = 'postgres'
    ORDER BY lease_expires_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs j
    SET status = (CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'retrying' END)
                 ::{schema}.job_status,
        run_at = now(),
        completed_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        error = jsonb_build_object(
            'type', 'jobrunner.LeaseExpired',
            'message', 'the worker running this attempt stopped heartbeating (crashed, killed '
                       'or disconnected); its lease expired',
            'traceback', NULL),
        -- back in the queue, the job starts over; a final failure keeps how far it got
        progress = CASE WHEN j.attempts >= j.max_attempts THEN j.progress ELSE 0 END,
        progress_message = CASE WHEN j.attempts >= j.max_attempts THEN j.progress_message END,
        updated_at = timezone('utc', now()),
        lease_expires_at = NULL, worker_id = NULL
    FROM expired e
    WHERE j.tenant = e.tenant AND j.job_id = e.job_id
    RETURNING j.tenant, j.job_id, j.attempts, j.status, j.queue, j.error
), closed_steps AS (
    -- The dead attempt's open steps: nobody will ever finish them (its writes are fenced by
    -- status 'processing', which the job just left). Attempt rows are never 'processing'.
    UPDATE {schema}.job_details d
    SET status = 'failed',
        result = jsonb_build_object(
            'type', 'jobrunner.LeaseExpired',
            'message', 'the attempt''s lease expired before this step finished (its worker '
                       'crashed, was killed or lost the database)',
            'traceback', NULL),
        processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb)
                   || jsonb_build_object('finished_at', now(), 'lease_expired', true)
    FROM rescued r
    WHERE d.tenant = r.tenant AND d.job_id = r.job_id AND d.status = 'processing'
), attempt_rows AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'attempt', 'failed', error, timezone('utc', now()), attempts,
           jsonb_build_object('lease_expired', true)
    FROM rescued
)
SELECT job_id, status, queue FROM rescued

-- name: release_jobs
-- Graceful shutdown: hand unfinished attempts back without counting them against the policy.
-- The job starts over: progress is reset and the attempt's open steps are closed.
WITH released AS (
    UPDATE {schema}.jobs j
    SET status = 'queued', attempts = greatest(j.attempts - 1, 0), run_at = now(),
        progress = 0, progress_message = NULL,
        lease_expires_at = NULL, worker_id = NULL, updated_at = timezone('utc', now())
    FROM unnest(%(tenants)s::uuid[], %(job_ids)s::uuid[], %(tokens)s::bigint[])
        AS r(tenant, job_id, token)
    WHERE j.tenant = r.tenant AND j.job_id = r.job_id AND j.lease_token = r.token
      AND j.status::text = 'processing'  -- `::text`: see complete_jobs
    RETURNING j.tenant, j.job_id, j.queue
), closed_steps AS (
    UPDATE {schema}.job_details d
    SET status = 'cancelled',
        result = jsonb_build_object(
            'type', 'jobrunner.Released',
            'message', 'the worker shut down before this step finished; the job was queued '
                       'again',
            'traceback', NULL),
        processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb)
                   || jsonb_build_object('finished_at', now(), 'released', true)
    FROM released r
    WHERE d.tenant = r.tenant AND d.job_id = r.job_id AND d.status = 'processing'
)
SELECT job_id, pg_notify(%(channel)s, queue) AS notified FROM released

-- name: notify_jobs
SELECT pg_notify(%(channel)s, %(payload)s)

-- name: listen_channel
LISTEN {channel}

-- name: pin_policy
-- A job enqueued without a policy (an older release, or a producer without the handler) takes
-- the claiming worker's; from then on it is the job's own. Fenced by the attempt's token.
UPDATE {schema}.jobs
SET policy = %(policy)s, max_attempts = %(max_attempts)s
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
  AND policy IS NULL
