-- jobrunner 0007: the execution policy in force is stored with each job (and each schedule,
-- which copies it into the jobs it fires) when it is enqueued: attempts, intervals,
-- coefficient, jitter, non-retryable error names and timeout (JSON; see
-- jobrunner._execution.JobPolicy). It is the only source of truth for retries: a worker whose
-- handler registry differs applies the job's own policy. NULL (rows of older releases, or a
-- producer without the handler and require_registered off) is pinned by the first claim.
-- Adding a nullable column without a default rewrites nothing.

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS policy JSONB;
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS policy JSONB;
