-- Recurring schedules (PostgreSQL backend): the schedules table, its tracker rows in jobs, and
-- the scheduler's firing of due ticks. Every value is a bound parameter.

-- name: sched_lock_key
-- Serialises create-or-update calls of one (schema, tenant, singleton key).
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))

-- name: sched_clock
SELECT clock_timestamp() AS now

-- name: sched_find_by_key
SELECT * FROM {schema}.schedules
WHERE tenant = %(tenant)s AND singleton_key = %(singleton_key)s
FOR UPDATE

-- name: sched_get
SELECT * FROM {schema}.schedules
WHERE tenant = %(tenant)s AND schedule_id = %(schedule_id)s

-- name: sched_get_for_update
SELECT * FROM {schema}.schedules
WHERE tenant = %(tenant)s AND schedule_id = %(schedule_id)s
FOR UPDATE

-- name: sched_insert_tracker
INSERT INTO {schema}.jobs (
    tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
    external_id, queue, priority, run_at, data, max_attempts, singleton_key
)
VALUES (
    %(tenant)s, %(schedule_id)s, %(name)s, %(metadata)s, 'active',
    timezone('utc', now()), timezone('utc', now()), %(user_id)s, %(runner_type)s,
    %(external_id)s, %(queue)s, %(priority)s, %(next_run_at)s, %(data)s, %(max_attempts)s,
    %(singleton_key)s
)

-- name: sched_insert
INSERT INTO {schema}.schedules (
    tenant, schedule_id, singleton_key, name, data, metadata, expression, timezone, kind,
    missed_ticks, overlap, max_catch_up, priority, queue, max_attempts, user_id, next_run_at,
    runner_type, policy, depends_on_previous
)
VALUES (
    %(tenant)s, %(schedule_id)s, %(singleton_key)s, %(name)s, %(data)s, %(user_metadata)s,
    %(expression)s, %(timezone)s, %(kind)s, %(missed_ticks)s, %(overlap)s, %(max_catch_up)s,
    %(priority)s, %(queue)s, %(max_attempts)s, %(user_id)s, %(next_run_at)s, %(runner_type)s,
    %(policy)s, %(depends_on_previous)s
)
RETURNING *

-- name: sched_update
UPDATE {schema}.schedules
SET name = %(name)s, data = %(data)s, metadata = %(user_metadata)s,
    expression = %(expression)s, timezone = %(timezone)s, kind = %(kind)s,
    missed_ticks = %(missed_ticks)s, overlap = %(overlap)s, max_catch_up = %(max_catch_up)s,
    priority = %(priority)s, queue = %(queue)s, max_attempts = %(max_attempts)s,
    policy = %(policy)s, user_id = %(user_id)s, next_run_at = %(next_run_at)s,
    depends_on_previous = %(depends_on_previous)s,
    version = version + 1, updated_at = now()
WHERE tenant = %(tenant)s AND schedule_id = %(schedule_id)s
RETURNING *

-- name: sched_update_tracker
-- Rewrites the tracker from the schedule; last_run_status is kept (the trigger maintains it).
UPDATE {schema}.jobs
SET type = %(name)s, data = %(data)s, queue = %(queue)s, priority = %(priority)s,
    max_attempts = %(max_attempts)s, user_id = %(user_id)s, run_at = %(next_run_at)s,
    metadata = %(metadata)s::jsonb
               || jsonb_build_object('last_run_status',
                                     coalesce(metadata -> 'last_run_status', 'null'::jsonb)),
    updated_at = timezone('utc', now())
WHERE tenant = %(tenant)s AND job_id = %(schedule_id)s AND status = 'active'

-- name: sched_patch_tracker
UPDATE {schema}.jobs
SET metadata = coalesce(metadata, '{{}}'::jsonb) || %(patch)s::jsonb,
    run_at = coalesce(%(next_run_at)s::timestamptz, run_at),
    updated_at = timezone('utc', now())
WHERE tenant = %(tenant)s AND job_id = %(schedule_id)s AND status = 'active'

-- name: sched_set_paused
UPDATE {schema}.schedules
SET paused = %(paused)s, next_run_at = %(next_run_at)s, version = version + 1,
    updated_at = now()
WHERE tenant = %(tenant)s AND schedule_id = %(schedule_id)s
RETURNING *

-- name: sched_delete
WITH gone AS (
    DELETE FROM {schema}.schedules
    WHERE tenant = %(tenant)s AND schedule_id = %(schedule_id)s
    RETURNING schedule_id
), gone_ticks AS (
    DELETE FROM {schema}.schedule_ticks t USING gone g
    WHERE t.tenant = %(tenant)s AND t.schedule_id = g.schedule_id
)
SELECT schedule_id FROM gone

-- name: sched_cancel_tracker
-- The removed schedule's tracker says so: removed (not paused), no next run.
UPDATE {schema}.jobs
SET status = 'cancelled',
    completed_at = now(),
    updated_at = timezone('utc', now()),
    metadata = coalesce(metadata, '{{}}'::jsonb)
               || jsonb_build_object('paused', false, 'next_run_at', NULL,
                                     'schedule_removed', true, 'removed_at', now())
               || jsonb_strip_nulls(jsonb_build_object('cancel_reason', %(reason)s::text,
                                                       'cancelled_by', %(cancelled_by)s::text))
WHERE tenant = %(tenant)s AND job_id = %(schedule_id)s AND status = 'active'
RETURNING job_id

-- name: sched_list
SELECT s.*, j.status AS last_run_status
FROM {schema}.schedules s
LEFT JOIN {schema}.jobs j ON j.tenant = s.tenant AND j.job_id = s.last_job_id
WHERE s.tenant = %(tenant)s
ORDER BY s.name, s.singleton_key

-- name: sched_notify
SELECT pg_notify(%(channel)s, %(payload)s)

-- name: sched_claim_due
-- Due schedules of this backend; a schedule another scheduler is firing right now is skipped
-- (it holds the row lock), and one it just fired no longer matches (next_run_at moved on).
SELECT * FROM {schema}.schedules
WHERE runner_type = 'postgres' AND NOT paused AND next_run_at <= %(now)s
ORDER BY next_run_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: sched_has_live_run
SELECT EXISTS (
    SELECT 1 FROM {schema}.jobs
    WHERE tenant = %(tenant)s AND schedule_id = %(schedule_id)s
      AND status IN ('pending', 'queued', 'processing', 'retrying', 'waiting')
) AS live

-- name: sched_insert_runs
-- One job per tick: schedule_ticks' primary key (tenant, schedule_id, scheduled_for) makes a
-- second insert of the same tick a no-op whoever attempts it, and only ticks recorded by this
-- statement get a job.
WITH ticks AS (
    SELECT * FROM unnest(%(job_ids)s::uuid[], %(fire_times)s::timestamptz[], %(fire_isos)s::text[])
        AS t(job_id, fire_time, fire_iso)
), fired AS (
    INSERT INTO {schema}.schedule_ticks (tenant, schedule_id, scheduled_for, job_id)
    SELECT %(tenant)s, %(schedule_id)s, t.fire_time, t.job_id FROM ticks t
    ON CONFLICT DO NOTHING
    RETURNING job_id
), inserted AS (
    INSERT INTO {schema}.jobs_live (
        tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
        queue, priority, run_at, data, max_attempts, schedule_id, scheduled_for, policy
    )
    SELECT s.tenant, t.job_id, s.name,
           s.metadata || jsonb_build_object('schedule_id', s.schedule_id::text,
                                            'scheduled_for', t.fire_iso),
           (CASE WHEN t.fire_time <= now() THEN 'queued' ELSE 'pending' END)::{schema}.job_status,
           timezone('utc', now()), timezone('utc', now()), s.user_id, 'postgres',
           s.queue, s.priority, t.fire_time, s.data, s.max_attempts, s.schedule_id, t.fire_time,
           s.policy
    FROM ticks t
    JOIN fired f ON f.job_id = t.job_id
    JOIN {schema}.schedules s ON s.tenant = %(tenant)s AND s.schedule_id = %(schedule_id)s
    ORDER BY t.fire_time
    RETURNING job_id, scheduled_for, status, queue
)
SELECT job_id, scheduled_for, status::text AS status,
       pg_notify(%(channel)s, queue) AS notified
FROM inserted
ORDER BY scheduled_for

-- name: sched_advance
UPDATE {schema}.schedules
SET next_run_at = %(next_run_at)s,
    last_run_at = coalesce(%(last_run_at)s::timestamptz, last_run_at),
    last_job_id = coalesce(%(last_job_id)s::uuid, last_job_id),
    skipped_ticks = skipped_ticks + %(skipped)s,
    updated_at = now()
WHERE tenant = %(tenant)s AND schedule_id = %(schedule_id)s
RETURNING *

-- name: sched_next_due
SELECT min(next_run_at) AS next_run_at, clock_timestamp() AS db_now
FROM {schema}.schedules
WHERE runner_type = 'postgres' AND NOT paused
