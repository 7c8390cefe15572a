-- jobrunner 0011: one claim index for the plain and the fair claim; fair claiming on by default
-- (docs/fairness.md, "How it is enforced").
--
-- The claim index gains `tenant` after `queue`: (queue, tenant, priority DESC, run_at, job_id)
-- over claimable rows. The claim walks a queue's tenants with a skip scan of it (one probe per
-- tenant; two for a single-tenant queue) and reads each tenant's jobs in claim order, so the
-- fair claim needs no index of its own (the former jobs_fair_idx, built at run time, cost every
-- enqueue one more index entry) and a single-tenant queue is claimed exactly as before.
-- Runs with search_path set to the jobrunner schema, in one transaction.

DROP INDEX IF EXISTS jobs_live_claim_idx;
CREATE INDEX jobs_live_claim_idx ON jobs_live (queue, tenant, priority DESC, run_at, job_id)
    WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres';

-- flow_state.enabled now means "rules that need exact counting exist" (a concurrency or rate
-- limit): only then do claims run one at a time under the flow lock. Pauses and weights are
-- read by every claim without a lock. fair is the database-wide switch, on by default.
ALTER TABLE flow_state ALTER COLUMN fair SET DEFAULT true;
UPDATE flow_state
SET fair = true,
    enabled = EXISTS (SELECT 1 FROM flow_rules
                      WHERE max_running IS NOT NULL OR rate_count IS NOT NULL),
    version = version + 1
WHERE id;
