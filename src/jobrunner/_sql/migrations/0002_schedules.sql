-- jobrunner 0002: recurring schedules.
-- A schedule is a row here plus its tracker row in jobs (status 'active', job_id = schedule_id).
-- Every tick fires a job of its own with jobs.schedule_id = the schedule and
-- jobs.scheduled_for = the tick; the unique index below makes "one job per tick" a database
-- guarantee, whatever the number of schedulers racing.
-- Runs with search_path set to the jobrunner schema.

ALTER TABLE jobs ADD COLUMN scheduled_for TIMESTAMPTZ;

-- Exactly one job per (schedule, tick).
CREATE UNIQUE INDEX jobs_schedule_tick_idx ON jobs (tenant, schedule_id, scheduled_for)
    WHERE schedule_id IS NOT NULL AND scheduled_for IS NOT NULL;

-- Overlap policy 'skip': is a previous run of the schedule still live?
CREATE INDEX jobs_schedule_live_idx ON jobs (tenant, schedule_id)
    WHERE schedule_id IS NOT NULL
      AND status IN ('pending', 'queued', 'processing', 'retrying');

CREATE TABLE schedules (
    tenant        UUID NOT NULL,
    schedule_id   UUID NOT NULL,
    singleton_key TEXT NOT NULL,
    name          TEXT NOT NULL,
    data          JSONB NOT NULL DEFAULT '{}'::jsonb,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    expression    TEXT NOT NULL,
    timezone      TEXT NOT NULL DEFAULT 'UTC',
    kind          TEXT NOT NULL CHECK (kind IN ('cron', 'interval')),
    missed_ticks  TEXT NOT NULL DEFAULT 'latest' CHECK (missed_ticks IN ('latest', 'skip', 'all')),
    overlap       TEXT NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip')),
    max_catch_up  INTEGER NOT NULL DEFAULT 10 CHECK (max_catch_up BETWEEN 1 AND 1000),
    priority      SMALLINT NOT NULL DEFAULT 0,
    queue         TEXT NOT NULL DEFAULT 'default',
    max_attempts  INTEGER NOT NULL DEFAULT 3,
    user_id       UUID NOT NULL,
    paused        BOOLEAN NOT NULL DEFAULT false,
    next_run_at   TIMESTAMPTZ NOT NULL,
    last_run_at   TIMESTAMPTZ,
    last_job_id   UUID,
    skipped_ticks BIGINT NOT NULL DEFAULT 0,
    runner_type   TEXT NOT NULL DEFAULT 'postgres',
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, schedule_id),
    UNIQUE (tenant, singleton_key),
    -- Deleting the tracker row deletes the schedule: no schedule without its tracker.
    FOREIGN KEY (tenant, schedule_id) REFERENCES jobs (tenant, job_id) ON DELETE CASCADE
);

-- The scheduler's timer and its claim of due schedules.
CREATE INDEX schedules_due_idx ON schedules (next_run_at)
    WHERE NOT paused AND runner_type = 'postgres';

-- Keep the tracker's metadata.last_run_status current when the schedule's latest run changes
-- status. Deadlock-free by construction: a statement only locks the tracker of a job that is
-- its schedule's latest run (one job row, locked by that statement alone), and every other
-- writer of trackers (scheduler, pause, update, cancel) holds one tracker per transaction and
-- never waits for a job row while holding it.
CREATE FUNCTION schedule_run_status() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE jobs
    SET metadata = coalesce(metadata, '{}'::jsonb)
                   || jsonb_build_object('last_run_status', NEW.status::text)
    WHERE tenant = NEW.tenant AND job_id = NEW.schedule_id AND status = 'active'
      AND metadata ->> 'last_job_id' = NEW.job_id::text;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_schedule_run_status
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.schedule_id IS NOT NULL AND NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION schedule_run_status();

-- A removed schedule's tracker row is history: nothing may bring it back to life (retry_job
-- would otherwise queue it and run the handler with the schedule's data). The update is
-- skipped, so such a call reports "not retried".
CREATE FUNCTION keep_removed_schedule_cancelled() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_removed_schedule_stays_cancelled
    BEFORE UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status = 'cancelled' AND NEW.status IS DISTINCT FROM OLD.status
          AND OLD.metadata ? 'schedule_removed')
    EXECUTE FUNCTION keep_removed_schedule_cancelled();
