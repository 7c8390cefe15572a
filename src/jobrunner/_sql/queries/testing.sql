-- Queries of jobrunner.testing (drain and assertions): test helpers that look across every
-- tenant of a schema on purpose (a test owns its schema). PostgreSQL queue rows only.

-- name: testing_live_queues
SELECT DISTINCT queue FROM {schema}.jobs
WHERE runner_type = 'postgres' AND status IN ('pending', 'queued', 'processing', 'retrying')

-- name: testing_make_due
-- Waiting retries (and pending jobs due by the horizon) become due now.
UPDATE {schema}.jobs SET run_at = now()
WHERE runner_type = 'postgres' AND run_at > now()
  AND (status = 'retrying' OR (status = 'pending' AND run_at <= %(horizon)s::timestamptz))

-- name: testing_live_counts
-- Pending jobs due by the horizon count too: a dependent released (as pending, its run_at
-- still ahead) after this pass's testing_make_due is made due by the next pass.
SELECT queue, count(*) AS n FROM {schema}.jobs
WHERE runner_type = 'postgres'
  AND (status IN ('queued', 'processing', 'retrying')
       OR (status = 'pending' AND run_at <= greatest(now(), %(horizon)s::timestamptz)))
GROUP BY queue

-- name: testing_next_tick
SELECT min(next_run_at) AS at FROM {schema}.schedules WHERE NOT paused AND runner_type = 'postgres'

-- name: testing_describe_live
SELECT type, job_id, status::text AS status FROM {schema}.jobs
WHERE runner_type = 'postgres' AND status IN ('queued', 'processing', 'retrying')
LIMIT 20

-- name: testing_enqueued_jobs
-- What assert_enqueued looks at: plain jobs (no schedule trackers), optionally of one tenant,
-- one name and some statuses.
SELECT job_id, tenant, type, data, status::text AS status, metadata FROM {schema}.jobs
WHERE status <> 'active'
  AND coalesce(metadata ->> 'recurring', '') <> 'true'
  AND (%(tenant)s::uuid IS NULL OR tenant = %(tenant)s::uuid)
  AND (%(name)s::text IS NULL OR type = %(name)s::text)
  AND (%(statuses)s::text[] IS NULL OR status::text = ANY(%(statuses)s::text[]))
ORDER BY created_at, job_id
