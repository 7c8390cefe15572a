-- Jobs a producer wrote to the PostgreSQL queue (runner_type = 'postgres') while the Temporal
-- fallback was in effect (JOB_RUNNER_FALLBACK_TO_PGBOSS), counted by a Temporal worker that
-- runs that queue too (docs/backends.md). A worker-level figure over every tenant, like
-- next_due_in: the worker claims for all tenants.

-- name: postgres_queue_waiting
SELECT count(*)::bigint AS waiting,
       count(*) FILTER (WHERE run_at <= now())::bigint AS due,
       min(created_at) AS oldest_created_at
FROM {schema}.jobs
WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres'
  AND queue = ANY(%(queues)s::text[])
