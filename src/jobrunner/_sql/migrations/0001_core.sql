-- jobrunner 0001: the shared jobs and job_details tables (the seed's columns, unchanged names
-- and types) plus the queue columns and indexes the PostgreSQL backend claims with.
-- Runs with search_path set to the jobrunner schema.

CREATE TYPE job_status AS ENUM (
    'pending', 'processing', 'completed', 'failed', 'active', 'queued', 'cancelled', 'retrying'
);

CREATE TABLE jobs (
    tenant           UUID NOT NULL,
    job_id           UUID DEFAULT gen_random_uuid() NOT NULL,
    type             VARCHAR NOT NULL,
    metadata         JSONB,
    status           job_status NOT NULL,
    created_at       TIMESTAMP DEFAULT timezone('utc', now()),
    updated_at       TIMESTAMP,
    user_id          UUID NOT NULL,
    runner_type      VARCHAR DEFAULT 'postgres' NOT NULL,
    external_id      VARCHAR,
    external_run_id  VARCHAR,
    -- queue state (PostgreSQL backend) and shared progress/result state (both backends)
    queue            TEXT NOT NULL DEFAULT 'default',
    priority         SMALLINT NOT NULL DEFAULT 0,
    run_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    data             JSONB NOT NULL DEFAULT '{}'::jsonb,
    result           JSONB,
    error            JSONB,
    progress         SMALLINT NOT NULL DEFAULT 0,
    progress_message TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- fencing token: bumped by every claim; heartbeats and outcomes must present it
    lease_token      BIGINT NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    lease_expires_at TIMESTAMPTZ,
    worker_id        UUID,
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    singleton_key    TEXT,
    schedule_id      UUID,
    PRIMARY KEY (tenant, job_id)
) WITH (fillfactor = 80);

ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

-- The claim path: due jobs of this backend, in claim order, live rows only.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, job_id)
    WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres';

-- The timer on the next due job, across queues.
CREATE INDEX jobs_due_idx ON jobs (run_at)
    WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres';

-- Lease expiry (rescue of jobs whose worker died) and per-worker heartbeats.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'processing';

-- At most one live job per (tenant, singleton key).
CREATE UNIQUE INDEX jobs_singleton_idx ON jobs (tenant, singleton_key)
    WHERE singleton_key IS NOT NULL
      AND status IN ('pending', 'queued', 'processing', 'retrying');

CREATE INDEX jobs_external_id_idx ON jobs (external_id) WHERE external_id IS NOT NULL;

CREATE TABLE job_details (
    tenant       UUID NOT NULL,
    detail_id    UUID DEFAULT gen_random_uuid() NOT NULL,
    job_id       UUID NOT NULL,
    step_name    VARCHAR NOT NULL,
    status       job_status NOT NULL,
    result       JSONB,
    processed_at TIMESTAMP,
    retry_count  INTEGER DEFAULT 0,
    metadata     JSONB,
    PRIMARY KEY (tenant, detail_id),
    FOREIGN KEY (tenant, job_id) REFERENCES jobs (tenant, job_id) ON DELETE CASCADE
);

CREATE INDEX job_details_job_idx ON job_details (tenant, job_id, processed_at);
