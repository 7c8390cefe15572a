-- The Temporal backend's writes to the shared jobs / job_details tables.
-- Rows have runner_type = 'temporal'; external_id is the workflow id (or the Temporal
-- Schedule id for a schedule's tracker row). Attempt writes are fenced by lease_token.

-- name: temporal_insert_jobs_bulk
WITH rows AS (
    SELECT * FROM unnest(%(job_ids)s::uuid[], %(datas)s::jsonb[]) AS r(job_id, data)
)
INSERT INTO {schema}.jobs (
    tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
    external_id, queue, priority, run_at, data, max_attempts, policy
)
SELECT %(tenant)s, r.job_id, %(name)s::text, %(metadata)s,
       (CASE WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= now()
             THEN 'queued' ELSE 'pending' END)::{schema}.job_status,
       timezone('utc', now()), timezone('utc', now()), %(user_id)s, 'temporal',
       'job-' || %(name)s::text || '-' || r.job_id::text,
       %(queue)s, %(priority)s, coalesce(%(run_at)s::timestamptz, now()), r.data,
       %(max_attempts)s, %(policy)s
FROM rows r
RETURNING job_id

-- name: temporal_set_run_id
UPDATE {schema}.jobs
SET external_run_id = %(run_id)s
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND external_run_id IS DISTINCT FROM %(run_id)s

-- name: temporal_start_failed
UPDATE {schema}.jobs
SET status = 'failed', completed_at = now(), updated_at = timezone('utc', now()),
    error = jsonb_build_object('type', 'jobrunner.UnavailableError',
                               'message', %(message)s::text, 'traceback', NULL)
WHERE tenant = %(tenant)s AND job_id = ANY(%(job_ids)s::uuid[]) AND runner_type = 'temporal'
  AND status IN ('pending', 'queued')

-- name: temporal_begin_attempt
-- A new attempt takes over even from a 'processing' row: that attempt's worker is gone (Temporal
-- timed it out); bumping the token fences whatever it might still write, and its open steps are
-- closed as failed. Each attempt starts with its progress at 0.
WITH begun AS (
    UPDATE {schema}.jobs
    SET status = 'processing',
        attempts = %(attempt)s,
        max_attempts = %(max_attempts)s,
        lease_token = lease_token + 1,
        worker_id = %(worker_id)s,
        started_at = now(),
        progress = 0,
        progress_message = NULL,
        external_id = coalesce(external_id, %(workflow_id)s),
        external_run_id = %(run_id)s,
        updated_at = timezone('utc', now())
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
      AND status IN ('pending', 'queued', 'retrying', 'processing')
    RETURNING tenant, job_id, lease_token, queue, metadata, schedule_id
), closed_steps AS (
    UPDATE {schema}.job_details d
    SET status = 'failed',
        result = jsonb_build_object(
            'type', 'jobrunner.LeaseExpired',
            'message', 'the attempt''s worker stopped heartbeating (Temporal timed it out) '
                       'before this step finished',
            'traceback', NULL),
        processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb)
                   || jsonb_build_object('finished_at', now(), 'lease_expired', true)
    FROM begun b
    WHERE d.tenant = b.tenant AND d.job_id = b.job_id AND d.status = 'processing'
)
SELECT lease_token, queue, metadata, schedule_id FROM begun

-- name: temporal_complete
WITH updated AS (
    UPDATE {schema}.jobs
    SET status = 'completed', result = %(result)s::jsonb, error = NULL, progress = 100,
        completed_at = now(), updated_at = timezone('utc', now()), worker_id = NULL
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
      AND status = 'processing'
    RETURNING tenant, job_id, attempts, has_dependents
), attempt_row AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'attempt', 'completed', timezone('utc', now()), attempts,
           jsonb_build_object('started_at', %(started_at)s::timestamptz,
                              'duration_ms', %(duration_ms)s::float8,
                              'worker_id', %(worker_id)s::text)
    FROM updated
)
-- has_dependents: the activity then wakes the workflows this outcome released (0012)
SELECT job_id, has_dependents FROM updated

-- name: temporal_fail
WITH updated AS (
    UPDATE {schema}.jobs
    SET status = (CASE WHEN %(retry_in)s::float8 IS NULL THEN 'failed' ELSE 'retrying' END)
                 ::{schema}.job_status,
        error = %(error)s,
        run_at = CASE WHEN %(retry_in)s::float8 IS NULL THEN run_at
                      ELSE now() + make_interval(secs => %(retry_in)s::float8) END,
        completed_at = CASE WHEN %(retry_in)s::float8 IS NULL THEN now() END,
        updated_at = timezone('utc', now()),
        worker_id = NULL
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
      AND status = 'processing'
    RETURNING tenant, job_id, attempts, run_at, error, has_dependents
), attempt_row AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'attempt', 'failed', error, timezone('utc', now()), attempts,
           jsonb_build_object('started_at', %(started_at)s::timestamptz,
                              'duration_ms', %(duration_ms)s::float8,
                              'worker_id', %(worker_id)s::text,
                              'next_run_at', CASE WHEN %(retry_in)s::float8 IS NULL THEN NULL
                                                  ELSE run_at END)
    FROM updated
)
SELECT job_id, has_dependents FROM updated

-- name: temporal_finish_failed
-- The workflow's last word when the activity could not record the outcome itself (server-side
-- timeout, dead worker): fail the job unless it is final already. Fenced by the run id: after
-- retry_job the row belongs to a new run, and the old run's late word must change nothing.
WITH prev AS (
    SELECT tenant, job_id, status FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
      AND status IN ('pending', 'queued', 'processing', 'retrying', 'waiting')
      AND (external_run_id = %(run_id)s OR (external_run_id IS NULL AND lease_token = 0))
    FOR UPDATE
), updated AS (
    UPDATE {schema}.jobs j
    SET status = 'failed', error = %(error)s, completed_at = now(),
        updated_at = timezone('utc', now()), worker_id = NULL,
        lease_token = j.lease_token + 1
    FROM prev
    WHERE j.tenant = prev.tenant AND j.job_id = prev.job_id
    RETURNING j.tenant, j.job_id, j.attempts, j.error, prev.status AS previous_status
), attempt_row AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'attempt', 'failed', error, timezone('utc', now()), attempts,
           '{{}}'::jsonb
    FROM updated WHERE previous_status = 'processing'
), closed_steps AS (
    -- the attempt that could not record its outcome cannot finish its steps either
    UPDATE {schema}.job_details d
    SET status = 'failed', result = u.error, processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb) || jsonb_build_object('finished_at', now())
    FROM updated u
    WHERE d.tenant = u.tenant AND d.job_id = u.job_id AND d.status = 'processing'
)
SELECT job_id FROM updated

-- name: temporal_finish_cancelled
-- The workflow ends cancelled (cancelJob signal or workflow cancel): as cancel_job, fenced by
-- the run id like temporal_finish_failed.
WITH prev AS (
    SELECT tenant, job_id, status, attempts FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
      AND status IN ('pending', 'queued', 'processing', 'retrying', 'waiting')
      AND (external_run_id = %(run_id)s OR (external_run_id IS NULL AND lease_token = 0))
    FOR UPDATE
), cancelled AS (
    UPDATE {schema}.jobs j
    SET status = 'cancelled',
        completed_at = now(),
        updated_at = timezone('utc', now()),
        worker_id = NULL,
        lease_token = j.lease_token + 1,
        error = jsonb_build_object('type', 'cancelled', 'message',
                                   coalesce(%(reason)s::text, 'cancelled'), 'traceback', NULL),
        metadata = coalesce(j.metadata, '{{}}'::jsonb)
                   || jsonb_strip_nulls(jsonb_build_object('cancel_reason', %(reason)s::text,
                                                           'cancelled_by', %(cancelled_by)s::text))
    FROM prev
    WHERE j.tenant = prev.tenant AND j.job_id = prev.job_id
    RETURNING j.tenant, j.job_id, prev.status AS previous_status, j.attempts
), attempt_row AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'attempt', 'cancelled', timezone('utc', now()), attempts,
           jsonb_strip_nulls(jsonb_build_object('reason', %(reason)s::text,
                                                'cancelled_by', %(cancelled_by)s::text))
    FROM cancelled WHERE previous_status = 'processing'
), closed_steps AS (
    -- the cancel fences the attempt (new token), so it can no longer close its own steps
    UPDATE {schema}.job_details d
    SET status = 'cancelled', processed_at = timezone('utc', now()),
        result = jsonb_build_object('type', 'cancelled', 'message',
                                    coalesce(%(reason)s::text, 'cancelled'), 'traceback', NULL),
        metadata = coalesce(d.metadata, '{{}}'::jsonb) || jsonb_build_object('finished_at', now())
    FROM cancelled c
    WHERE d.tenant = c.tenant AND d.job_id = c.job_id AND d.status = 'processing'
)
SELECT job_id FROM cancelled

-- name: temporal_signal_progress
UPDATE {schema}.jobs
SET progress = %(progress)s, progress_message = %(message)s, updated_at = timezone('utc', now())
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND status IN ('pending', 'queued', 'processing', 'retrying')

-- name: temporal_insert_run
-- The row of a run fired by a Temporal Schedule. scheduled_for is the tick: schedule_ticks'
-- primary key (tenant, schedule_id, scheduled_for) makes a second firing of the same tick
-- insert nothing (as does an activity retry, by job_id). Returns the row only if inserted.
WITH fired AS (
    INSERT INTO {schema}.schedule_ticks (tenant, schedule_id, scheduled_for, job_id)
    SELECT %(tenant)s, %(schedule_id)s, %(scheduled_for)s, %(job_id)s
    WHERE %(scheduled_for)s::timestamptz IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING job_id
)
INSERT INTO {schema}.jobs_live (
    tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
    external_id, external_run_id, queue, priority, run_at, data, max_attempts, schedule_id,
    scheduled_for
)
SELECT %(tenant)s, %(job_id)s, %(name)s, %(metadata)s, 'queued', timezone('utc', now()),
       timezone('utc', now()), %(user_id)s, 'temporal', %(external_id)s, %(external_run_id)s,
       %(queue)s, %(priority)s, now(), %(data)s, %(max_attempts)s, %(schedule_id)s,
       %(scheduled_for)s
WHERE %(scheduled_for)s::timestamptz IS NULL OR EXISTS (SELECT 1 FROM fired)
ON CONFLICT DO NOTHING
RETURNING job_id

-- name: temporal_run_exists
SELECT job_id, status::text AS status FROM {schema}.jobs
WHERE tenant = %(tenant)s AND job_id = %(job_id)s

-- name: temporal_lock_tracker
-- A scheduled run's tracker, locked while the run decides and registers (runs of one schedule
-- register one at a time; the tracker's last_* keys follow the newest tick).
SELECT job_id, metadata, external_id, status FROM {schema}.jobs
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
FOR UPDATE

-- name: temporal_patch_tracker
-- Merge %(patch)s into a live tracker's metadata; add %(skipped)s to skipped_ticks; the
-- tracker's run_at follows next_run_at (as on PostgreSQL).
UPDATE {schema}.jobs
SET metadata = coalesce(metadata, '{{}}'::jsonb) || %(patch)s::jsonb
               || jsonb_build_object('skipped_ticks',
                                     coalesce((metadata ->> 'skipped_ticks')::bigint, 0)
                                     + %(skipped)s::bigint),
    run_at = coalesce(%(next_run_at)s::timestamptz, run_at),
    updated_at = timezone('utc', now())
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND status = 'active'

-- name: temporal_reset_for_retry
-- As monitoring_retry_job: the new run starts clean (no progress, no cancel metadata).
UPDATE {schema}.jobs
SET status = 'queued', attempts = 0, error = NULL, result = NULL, progress = 0,
    progress_message = NULL, completed_at = NULL, started_at = NULL, run_at = now(),
    updated_at = timezone('utc', now()), lease_token = lease_token + 1,
    external_run_id = NULL,
    metadata = coalesce(metadata, '{{}}'::jsonb) - 'cancel_reason' - 'cancelled_by'
               - 'cancelled_at'
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND status IN ('failed', 'cancelled')
  -- A removed schedule's tracker is history, never a job to run (the trigger of migration
  -- 0002 refuses it too; this also covers trackers cancelled before schedule_removed existed).
  AND NOT (coalesce(metadata, '{{}}'::jsonb) ? 'schedule_removed')
  AND coalesce(metadata ->> 'kind', '') <> 'temporal_schedule'
RETURNING job_id, type, data, queue, priority, user_id, metadata, external_id, schedule_id,
          policy

-- name: temporal_get_tracker
SELECT job_id, tenant, type, data, metadata, external_id, singleton_key, queue, priority,
       user_id, status, created_at
FROM {schema}.jobs
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND status = 'active'

-- name: temporal_find_tracker
SELECT job_id, tenant, external_id FROM {schema}.jobs
WHERE external_id = %(schedule_id)s AND runner_type = 'temporal' AND status = 'active'

-- name: temporal_insert_tracker
INSERT INTO {schema}.jobs_live (
    tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
    external_id, queue, priority, run_at, data, max_attempts, singleton_key, started_at
)
VALUES (
    %(tenant)s, %(job_id)s, %(name)s, %(metadata)s, 'active', timezone('utc', now()),
    timezone('utc', now()), %(user_id)s, 'temporal', %(schedule_id)s, %(queue)s, %(priority)s,
    now(), %(data)s, %(max_attempts)s, %(singleton_key)s, now()
)
ON CONFLICT DO NOTHING
RETURNING job_id

-- name: temporal_update_tracker
-- Rewrites the tracker from the schedule; what the runs maintain (last run, skipped ticks) and
-- the next run (refreshed from Temporal right after) are kept.
UPDATE {schema}.jobs
SET type = %(name)s,
    metadata = %(metadata)s::jsonb
               || jsonb_strip_nulls(jsonb_build_object(
                      'next_run_at', metadata -> 'next_run_at',
                      'last_run_at', metadata -> 'last_run_at',
                      'last_job_id', metadata -> 'last_job_id',
                      'last_run_status', metadata -> 'last_run_status',
                      'skipped_ticks', metadata -> 'skipped_ticks')),
    data = %(data)s, queue = %(queue)s,
    priority = %(priority)s, user_id = %(user_id)s, max_attempts = %(max_attempts)s,
    updated_at = timezone('utc', now())
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND status = 'active'
RETURNING job_id

-- name: temporal_set_tracker_paused
UPDATE {schema}.jobs
SET metadata = coalesce(metadata, '{{}}'::jsonb)
               || jsonb_build_object('paused', %(paused)s::boolean,
                                     'next_run_at', %(next_run_at)s::text),
    run_at = coalesce(%(next_run_at)s::timestamptz, run_at),
    updated_at = timezone('utc', now())
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND status = 'active'

-- name: temporal_cancel_tracker
-- The tracker stays as history marked schedule_removed, which the trigger of migration 0002
-- keeps cancelled (retry_job cannot revive it), as on PostgreSQL. Its metadata says removed,
-- not paused: a removed schedule has no pause state and no next run.
UPDATE {schema}.jobs
SET status = 'cancelled', completed_at = now(), updated_at = timezone('utc', now()),
    metadata = coalesce(metadata, '{{}}'::jsonb)
               || jsonb_build_object('paused', false, 'next_run_at', NULL,
                                     'schedule_removed', true, 'removed_at', now())
               || jsonb_strip_nulls(jsonb_build_object('cancel_reason', %(reason)s::text,
                                                       'cancelled_by', %(cancelled_by)s::text))
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND runner_type = 'temporal'
  AND status = 'active'
RETURNING job_id, external_id

-- name: temporal_list_trackers
SELECT job_id, tenant, type, data, metadata, external_id, singleton_key, created_at
FROM {schema}.jobs
WHERE tenant = %(tenant)s AND runner_type = 'temporal' AND status = 'active'
  AND (metadata ->> 'recurring' = 'true' OR metadata ->> 'kind' = 'temporal_schedule')
ORDER BY created_at, job_id

-- name: temporal_last_runs
-- The newest tick of each schedule (runs from before scheduled_for was set: by creation).
SELECT DISTINCT ON (schedule_id) schedule_id, job_id, status,
       coalesce(scheduled_for, created_at) AS run_at
FROM {schema}.jobs
WHERE tenant = %(tenant)s AND schedule_id = ANY(%(schedule_ids)s::uuid[])
ORDER BY schedule_id, coalesce(scheduled_for, created_at) DESC, job_id
