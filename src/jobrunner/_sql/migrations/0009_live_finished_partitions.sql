-- jobrunner 0009: `jobs` split into a live and a finished partition (docs/performance.md,
-- "The queue layout").
--
-- Why: `jobs` was at once the queue, the record both backends share and the monitoring index.
-- Every enqueue wrote about eight index entries (claim, due, waiting, created, tenant_created,
-- tenant_status, the primary key...), and since `status` appears in index predicates no status
-- change was a HOT update, so claim and completion wrote five entries each again. Now
-- `jobs` is PARTITIONED BY LIST (status):
--   * jobs_live (the DEFAULT partition: pending, queued, retrying, processing, active and any
--     status added later) carries only what enqueue, claim, lease and uniqueness of live jobs
--     need: its primary key, the claim and due indexes, the lease index and partial indexes
--     (singleton keys, recurring schedules, Temporal) that most rows are not in;
--   * jobs_finished (completed, failed, cancelled) carries the monitoring indexes, written once
--     per job when it finishes (a cross-partition UPDATE moves the row).
-- Every column, its type and default and its position are unchanged, and `jobs` keeps its
-- name: the seed's SQL (`SELECT * FROM jobs WHERE tenant = ... ORDER BY created_at DESC`,
-- `runner_type`, `external_id`) reads the partitioned table as before, and INSERT/UPDATE/DELETE
-- through `jobs` are routed by PostgreSQL.
--
-- What a partitioned table cannot have, and what replaces it:
--   * a primary key without the partition key: each partition has PRIMARY KEY (tenant, job_id);
--     job ids are client-generated UUIDs, a row is in exactly one partition, and the enqueue's
--     lost-reply retry checks jobs_finished too (insert_job);
--   * foreign keys to it: job_details and schedules referenced jobs (ON DELETE CASCADE); the
--     statements that delete jobs now delete their steps and schedules in the same statement;
--   * a unique index across partitions: "one job per schedule tick" moves to schedule_ticks,
--     one row per fired tick, inserted by the same statement as the tick's job.
-- Triggers: a row moved by an UPDATE fires DELETE and INSERT row triggers, not UPDATE ones, so
-- the final-status NOTIFY (0008) and the schedule's last-run status (0002) also fire AFTER
-- INSERT on the partition the row arrives in.
-- Runs with search_path set to the jobrunner schema, in one transaction.

-- 1. Set the old table aside; its dependents and index names are released.
ALTER TABLE job_details DROP CONSTRAINT IF EXISTS job_details_tenant_job_id_fkey;
ALTER TABLE schedules DROP CONSTRAINT IF EXISTS schedules_tenant_schedule_id_fkey;
ALTER TABLE jobs RENAME TO jobs_before_0009;
ALTER TABLE jobs_before_0009 DROP CONSTRAINT jobs_pkey;
DO $$
DECLARE
    idx regclass;
BEGIN
    FOR idx IN SELECT indexrelid::regclass FROM pg_index
               WHERE indrelid = 'jobs_before_0009'::regclass
    LOOP
        EXECUTE format('DROP INDEX %s', idx);
    END LOOP;
END
$$;

-- 2. The partitioned table with the same columns, defaults and order.
CREATE TABLE jobs (LIKE jobs_before_0009 INCLUDING DEFAULTS) PARTITION BY LIST (status);

CREATE TABLE jobs_finished PARTITION OF jobs
    FOR VALUES IN ('completed', 'failed', 'cancelled');
CREATE TABLE jobs_live PARTITION OF jobs DEFAULT WITH (fillfactor = 80);

ALTER TABLE jobs_live SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
ALTER TABLE jobs_finished SET (autovacuum_analyze_scale_factor = 0.02);

ALTER TABLE jobs_live ADD CONSTRAINT jobs_live_pkey PRIMARY KEY (tenant, job_id);
ALTER TABLE jobs_finished ADD CONSTRAINT jobs_finished_pkey PRIMARY KEY (tenant, job_id);

-- 3. Live jobs: what enqueue, claim, leases and uniqueness need.
CREATE INDEX jobs_live_claim_idx ON jobs_live (queue, priority DESC, run_at, job_id)
    WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres';
CREATE INDEX jobs_live_due_idx ON jobs_live (run_at)
    WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres';
CREATE INDEX jobs_live_lease_idx ON jobs_live (lease_expires_at) WHERE status = 'processing';
CREATE UNIQUE INDEX jobs_live_singleton_idx ON jobs_live (tenant, singleton_key)
    WHERE singleton_key IS NOT NULL
      AND status IN ('pending', 'queued', 'processing', 'retrying');
CREATE INDEX jobs_live_schedule_idx ON jobs_live (tenant, schedule_id)
    WHERE schedule_id IS NOT NULL;
CREATE UNIQUE INDEX jobs_live_temporal_schedule_idx ON jobs_live (external_id)
    WHERE runner_type = 'temporal' AND status = 'active';
CREATE INDEX jobs_live_external_id_idx ON jobs_live (external_id) WHERE external_id IS NOT NULL;

-- 4. Finished jobs: the monitoring indexes (list_jobs newest first per tenant and across
-- tenants, get_metrics' counts, failures and throughput by completion time).
CREATE INDEX jobs_finished_tenant_created_idx
    ON jobs_finished (tenant, created_at DESC NULLS LAST, job_id DESC);
CREATE INDEX jobs_finished_created_idx ON jobs_finished (created_at DESC NULLS LAST, job_id DESC);
CREATE INDEX jobs_finished_tenant_status_idx ON jobs_finished (tenant, status, runner_type);
CREATE INDEX jobs_finished_completed_idx ON jobs_finished (completed_at, tenant) INCLUDE (status);
CREATE INDEX jobs_finished_schedule_idx ON jobs_finished (tenant, schedule_id, created_at DESC)
    WHERE schedule_id IS NOT NULL;
CREATE INDEX jobs_finished_external_id_idx ON jobs_finished (external_id)
    WHERE external_id IS NOT NULL;

-- 5. One job per schedule tick (was the unique index jobs_schedule_tick_idx).
CREATE TABLE schedule_ticks (
    tenant        UUID NOT NULL,
    schedule_id   UUID NOT NULL,
    scheduled_for TIMESTAMPTZ NOT NULL,
    job_id        UUID NOT NULL,
    PRIMARY KEY (tenant, schedule_id, scheduled_for)
);

-- 6. The rows, then the old table.
INSERT INTO jobs SELECT * FROM jobs_before_0009;
INSERT INTO schedule_ticks (tenant, schedule_id, scheduled_for, job_id)
SELECT tenant, schedule_id, scheduled_for, job_id FROM jobs
WHERE schedule_id IS NOT NULL AND scheduled_for IS NOT NULL
ON CONFLICT DO NOTHING;
DROP TABLE jobs_before_0009;

-- 7. Triggers (the functions of 0002 and 0008 are unchanged).
CREATE TRIGGER jobs_finished_notify
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
          AND NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION job_finished_notify();

CREATE TRIGGER jobs_finished_notify_arrival
    AFTER INSERT ON jobs_finished
    FOR EACH ROW
    EXECUTE FUNCTION job_finished_notify();

CREATE TRIGGER jobs_schedule_run_status
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.schedule_id IS NOT NULL AND NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION schedule_run_status();

CREATE TRIGGER jobs_schedule_run_status_arrival
    AFTER INSERT ON jobs
    FOR EACH ROW
    WHEN (NEW.schedule_id IS NOT NULL)
    EXECUTE FUNCTION schedule_run_status();

CREATE TRIGGER jobs_removed_schedule_stays_cancelled
    BEFORE UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status = 'cancelled' AND NEW.status IS DISTINCT FROM OLD.status
          AND OLD.metadata ? 'schedule_removed')
    EXECUTE FUNCTION keep_removed_schedule_cancelled();
