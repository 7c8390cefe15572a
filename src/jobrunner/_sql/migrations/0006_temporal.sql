-- jobrunner 0006: what the Temporal backend needs beyond the shared tables.

-- A Temporal Schedule id is unique in its namespace: at most one live tracker row per id, so
-- two concurrent schedule_recurring_job calls cannot create two trackers.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_temporal_schedule_idx ON jobs (external_id)
    WHERE runner_type = 'temporal' AND status = 'active';

-- The runs of a schedule, newest first (last run of each schedule in list_schedules).
CREATE INDEX IF NOT EXISTS jobs_temporal_schedule_runs_idx
    ON jobs (tenant, schedule_id, created_at DESC)
    WHERE schedule_id IS NOT NULL AND runner_type = 'temporal';
