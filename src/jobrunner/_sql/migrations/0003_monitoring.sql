-- jobrunner 0003: indexes for monitoring (dashboard, CLI, list_jobs, get_metrics,
-- clear_history) so the first page and the metrics stay fast with a million history rows.
-- Measured with bench/monitoring_bench.py; see docs/monitoring.md for the figures.

-- list_jobs of one tenant, newest first, keyset on (created_at, job_id).
CREATE INDEX IF NOT EXISTS jobs_tenant_created_idx
    ON jobs (tenant, created_at DESC NULLS LAST, job_id DESC);

-- list_jobs across tenants (the admin view, ALL_TENANTS).
CREATE INDEX IF NOT EXISTS jobs_created_idx
    ON jobs (created_at DESC NULLS LAST, job_id DESC);

-- get_metrics counts by status and runner type: an index-only scan instead of the heap.
CREATE INDEX IF NOT EXISTS jobs_tenant_status_idx
    ON jobs (tenant, status, runner_type);

-- Finished jobs by completion time: failed in the last 24 h, throughput of the last hour,
-- clear_history's older_than.
CREATE INDEX IF NOT EXISTS jobs_finished_idx
    ON jobs (completed_at, tenant) INCLUDE (status)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Age of the oldest waiting job of any backend (live rows only, so the index stays small).
CREATE INDEX IF NOT EXISTS jobs_waiting_idx
    ON jobs (tenant, run_at)
    WHERE status IN ('pending', 'queued', 'retrying');
