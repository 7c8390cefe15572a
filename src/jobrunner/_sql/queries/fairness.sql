-- Flow control for the PostgreSQL backend: concurrency and rate limits, pauses, weights and
-- purges (see docs/fairness.md; the claim without limits, fair or not, is claim_jobs in
-- worker.sql). Every rule change, and every claim while a concurrency or rate limit exists
-- (claim_jobs_limited), runs in a transaction that first takes flow_lock, so a free slot is
-- never counted twice.

-- name: flow_lock
SELECT pg_advisory_xact_lock(hashtext(%(key)s))

-- name: flow_claim_lock
-- The fair claim's lock. (JIT is off on every jobrunner connection, _db/_database.py: the
-- claim's cost estimate grows with the backlog past jit_above_cost, and compiling its ~200
-- expressions took 190 ms of a 230 ms claim on a 100k backlog.) The claim connection forces
-- generic plans for claim_jobs (_store.py); claim_jobs_fair keeps PostgreSQL's own choice, for
-- this transaction only.
SELECT pg_advisory_xact_lock(hashtext(%(key)s)), set_config('plan_cache_mode', 'auto', true)

-- name: fair_index_analyze
-- Fresh statistics: a just-loaded jobs_live otherwise looks empty to the planner, which would
-- then sort a tenant's rows instead of reading jobs_live_claim_idx in order.
ANALYZE {schema}.jobs_live

-- name: fair_stats_stale
-- Whether jobs_live changed enough since its last ANALYZE that plans may be wrong: a tenant
-- that dumps a backlog makes the table look empty to the planner for up to a minute
-- (autovacuum's nap), and the claim then sorts whole tenants instead of reading the index.
-- The statistics function, not pg_stat_user_tables: planning that view's joins cost about
-- 1 ms, paid in the claim's path once a second.
SELECT pg_stat_get_mod_since_analyze(c.oid)
       > greatest(1000, 0.2 * greatest(c.reltuples, 0)) AS stale
FROM pg_class c
WHERE c.oid = to_regclass(%(table)s)

-- name: fair_stats_lock
SELECT pg_try_advisory_xact_lock(hashtext(%(key)s)) AS got

-- name: flow_state
SELECT enabled, fair, version, vclock FROM {schema}.flow_state WHERE id

-- name: flow_refresh_state
UPDATE {schema}.flow_state
SET fair = coalesce(%(fair)s::boolean, fair),
    -- enabled: rules that need exact counting exist, so claims go one at a time (0011)
    enabled = EXISTS (SELECT 1 FROM {schema}.flow_rules
                      WHERE max_running IS NOT NULL OR rate_count IS NOT NULL),
    version = version + 1
WHERE id
RETURNING enabled, fair, version

-- name: flow_get_rule
SELECT rule_id, tenant, name, max_running, rate_count,
       extract(epoch FROM rate_period)::float8 AS rate_period, paused, weight, updated_at
FROM {schema}.flow_rules
WHERE tenant IS NOT DISTINCT FROM %(tenant)s::uuid AND name IS NOT DISTINCT FROM %(name)s::text

-- name: flow_save_rule
INSERT INTO {schema}.flow_rules (tenant, name, max_running, rate_count, rate_period, paused,
                                 weight, updated_at)
VALUES (%(tenant)s::uuid, %(name)s::text, %(max_running)s, %(rate_count)s,
        make_interval(secs => %(rate_period)s::float8), %(paused)s, %(weight)s, now())
ON CONFLICT (scope) DO UPDATE
SET max_running = EXCLUDED.max_running, rate_count = EXCLUDED.rate_count,
    rate_period = EXCLUDED.rate_period, paused = EXCLUDED.paused, weight = EXCLUDED.weight,
    updated_at = now()
RETURNING rule_id

-- name: flow_delete_rule
DELETE FROM {schema}.flow_rules
WHERE tenant IS NOT DISTINCT FROM %(tenant)s::uuid AND name IS NOT DISTINCT FROM %(name)s::text

-- name: flow_list_rules
-- A tenant sees its own rules and the rules on job names that apply to every tenant.
SELECT r.rule_id, r.tenant, r.name, r.max_running, r.rate_count,
       extract(epoch FROM r.rate_period)::float8 AS rate_period, r.paused, r.weight, r.updated_at,
       (SELECT count(*) FROM {schema}.jobs j
        WHERE j.status = 'processing' AND j.runner_type = 'postgres'
          AND (r.tenant IS NULL OR j.tenant = r.tenant)
          AND (r.name IS NULL OR j.type = r.name)) AS running,
       CASE WHEN r.rate_count IS NOT NULL THEN
           (SELECT count(*) FROM {schema}.flow_rate_events e
            WHERE e.rule_id = r.rule_id AND e.at > clock_timestamp() - r.rate_period)
       END AS rate_used
FROM {schema}.flow_rules r
WHERE %(all_tenants)s::boolean OR r.tenant = %(tenant)s::uuid OR r.tenant IS NULL
ORDER BY r.scope

-- name: flow_tenant_usage
SELECT j.tenant,
       count(*) FILTER (WHERE j.status IN ('pending', 'queued', 'retrying')) AS queued,
       count(*) FILTER (WHERE j.status IN ('pending', 'queued', 'retrying')
                          AND j.run_at <= now()) AS due,
       count(*) FILTER (WHERE j.status = 'processing') AS running,
       -- the stride passes are each worker's own since 0011 (flow_tenant_pass is not written)
       NULL::float8 AS pass
FROM {schema}.jobs j
WHERE j.runner_type = 'postgres'
  AND j.status IN ('pending', 'queued', 'retrying', 'processing')
  AND (%(all_tenants)s::boolean OR j.tenant = %(tenant)s::uuid)
GROUP BY j.tenant
ORDER BY j.tenant

-- name: flow_purge
-- Removes queued work only: running attempts are left alone (a claim holds their row lock
-- and their status is no longer live when the DELETE re-checks it).
WITH purged AS (
    DELETE FROM {schema}.jobs
    WHERE tenant = %(tenant)s::uuid AND runner_type = 'postgres'
      AND status IN ('pending', 'queued', 'retrying')
      AND (%(name)s::text IS NULL OR type = %(name)s::text)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    RETURNING tenant, job_id
), purged_steps AS (
    -- no foreign key cascades from jobs (0009)
    DELETE FROM {schema}.job_details s USING purged p
    WHERE s.tenant = p.tenant AND s.job_id = p.job_id
)
SELECT count(*) AS purged FROM purged

-- name: flow_notify
SELECT pg_notify(%(channel)s, 'flow')

-- name: claim_jobs_fair
-- The claim while a concurrency or rate limit exists. Run after flow_claim_lock in the same
-- transaction (READ COMMITTED: this statement's snapshot then sees every earlier claim).
-- Steps: remaining capacity per rule (running attempts counted from processing rows, rate
-- usage from the sliding window); tenants with live jobs per queue by a skip scan of
-- jobs_live_claim_idx; each tenant's best due jobs by priority; a virtual start time per
-- candidate (stride scheduling: the worker's pass for the tenant + rank / weight, passed in:
-- nothing of the schedule is written under the lock); rank checks against every rule that
-- applies; the batch in virtual-time order.
WITH RECURSIVE
clock AS MATERIALIZED (SELECT clock_timestamp() AS ts),
proc AS MATERIALIZED (
    SELECT tenant, type, count(*) AS n FROM {schema}.jobs_live
    WHERE status = 'processing' AND runner_type = 'postgres'
      AND EXISTS (SELECT 1 FROM {schema}.flow_rules WHERE max_running IS NOT NULL)
    GROUP BY tenant, type
),
caps AS MATERIALIZED (
    SELECT r.rule_id, r.tenant, r.name, r.paused, r.weight, r.rate_count, r.rate_period,
           least(
               CASE WHEN r.max_running IS NOT NULL THEN
                   r.max_running - (SELECT coalesce(sum(p.n), 0) FROM proc p
                                    WHERE (r.tenant IS NULL OR p.tenant = r.tenant)
                                      AND (r.name IS NULL OR p.type = r.name))::bigint
               END,
               CASE WHEN r.rate_count IS NOT NULL THEN
                   r.rate_count - (SELECT count(*) FROM {schema}.flow_rate_events e, clock
                                   WHERE e.rule_id = r.rule_id AND e.at > clock.ts - r.rate_period)
               END
           ) AS remaining
    FROM {schema}.flow_rules r
),
tq AS (
    SELECT q.queue,
           (SELECT j.tenant FROM {schema}.jobs_live j
            WHERE j.queue = q.queue AND j.status IN ('pending', 'queued', 'retrying')
              AND j.runner_type = 'postgres'
            ORDER BY j.tenant LIMIT 1) AS tenant
    FROM unnest(%(queues)s::text[]) AS q(queue)
    UNION ALL
    SELECT tq.queue,
           (SELECT j.tenant FROM {schema}.jobs_live j
            WHERE j.queue = tq.queue AND j.status IN ('pending', 'queued', 'retrying')
              AND j.runner_type = 'postgres' AND j.tenant > tq.tenant
            ORDER BY j.tenant LIMIT 1)
    FROM tq WHERE tq.tenant IS NOT NULL
),
tenants AS MATERIALIZED (
    SELECT tq.queue, tq.tenant,
           greatest(coalesce(tp.pass, %(vclock)s::float8), %(vclock)s::float8) AS eff,
           coalesce(ct.weight, 1)::float8 AS weight,
           ct.remaining AS t_remaining,
           ARRAY(SELECT c.name FROM caps c
                 WHERE c.name IS NOT NULL AND (c.tenant IS NULL OR c.tenant = tq.tenant)
                   AND (c.paused OR c.remaining <= 0)) AS blocked_names
    FROM tq
    LEFT JOIN caps ct ON ct.tenant = tq.tenant AND ct.name IS NULL
    LEFT JOIN unnest(%(pass_tenants)s::uuid[], %(pass_values)s::float8[]) AS tp(tenant, pass)
           ON tp.tenant = tq.tenant
    WHERE tq.tenant IS NOT NULL
      AND NOT coalesce(ct.paused OR ct.remaining <= 0, false)
),
cand AS (
    SELECT c.tenant, c.job_id, c.type, c.priority, c.run_at, t.eff, t.weight, t.t_remaining
    FROM tenants t
    CROSS JOIN LATERAL (
        SELECT j.tenant, j.job_id, j.type, j.priority, j.run_at FROM {schema}.jobs_live j
        WHERE j.queue = t.queue AND j.tenant = t.tenant
          AND j.status IN ('pending', 'queued', 'retrying') AND j.runner_type = 'postgres'
          AND j.run_at <= now()
          -- CASE, not a bare "<> ALL (array)": the planner estimates that at one row and
          -- would sort a whole tenant's backlog instead of reading the index in order
          AND CASE WHEN cardinality(t.blocked_names) = 0 THEN true
                   ELSE j.type <> ALL (t.blocked_names) END
        ORDER BY j.priority DESC, j.run_at, j.job_id
        LIMIT least(%(limit)s::bigint, coalesce(t.t_remaining, %(limit)s::bigint))
    ) c
),
ranked AS (
    SELECT cand.*,
           row_number() OVER (PARTITION BY tenant ORDER BY priority DESC, run_at, job_id) AS rn_t
    FROM cand
),
timed AS (
    SELECT ranked.*, eff + (rn_t - 1) / weight AS vstart FROM ranked
),
ranked2 AS (
    SELECT timed.*,
           row_number() OVER (PARTITION BY type ORDER BY vstart, tenant, rn_t) AS rn_n,
           row_number() OVER (PARTITION BY tenant, type ORDER BY rn_t) AS rn_tn
    FROM timed
),
picked AS MATERIALIZED (
    SELECT r.tenant, r.job_id, r.vstart, r.weight,
           row_number() OVER (ORDER BY r.vstart, r.tenant, r.rn_t) AS pos
    FROM ranked2 r
    LEFT JOIN caps cn ON cn.name = r.type AND cn.tenant IS NULL
    LEFT JOIN caps ctn ON ctn.tenant = r.tenant AND ctn.name = r.type
    WHERE (r.t_remaining IS NULL OR r.rn_t <= r.t_remaining)
      AND (cn.remaining IS NULL OR r.rn_n <= cn.remaining)
      AND (ctn.remaining IS NULL OR r.rn_tn <= ctn.remaining)
    ORDER BY r.vstart, r.tenant, r.rn_t
    LIMIT %(limit)s
),
locked AS (
    SELECT j.ctid AS row_ctid FROM {schema}.jobs_live j
    JOIN picked p ON j.tenant = p.tenant AND j.job_id = p.job_id
    WHERE j.status IN ('pending', 'queued', 'retrying') AND j.run_at <= now()
    FOR UPDATE OF j SKIP LOCKED
),
claimed AS (
    UPDATE {schema}.jobs_live j
    SET status = 'processing',
        attempts = j.attempts + 1,
        lease_token = j.lease_token + 1,
        worker_id = %(worker_id)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = (SELECT ts FROM clock),
        updated_at = timezone('utc', now())
    WHERE j.ctid = ANY (ARRAY(SELECT row_ctid FROM locked))
    -- What the worker reads (_store._claimed). The policy as text: a claim's jobs share a
    -- few, each parsed once per worker; an empty metadata as NULL: nothing to parse.
    RETURNING j.tenant, j.job_id, j.type, j.data, j.attempts, j.lease_token, j.queue,
              nullif(j.metadata, '{{}}'::jsonb) AS metadata, j.schedule_id,
              j.policy::text AS policy, j.run_at
),
events AS (
    INSERT INTO {schema}.flow_rate_events (rule_id, at)
    SELECT cp.rule_id, (SELECT ts FROM clock)
    FROM claimed c
    JOIN caps cp ON cp.rate_count IS NOT NULL
                AND (cp.tenant IS NULL OR cp.tenant = c.tenant)
                AND (cp.name IS NULL OR cp.name = c.type)
),
pruned AS (
    DELETE FROM {schema}.flow_rate_events e
    USING caps cp, clock
    WHERE e.rule_id = cp.rule_id AND cp.rate_count IS NOT NULL
      AND e.at <= clock.ts - cp.rate_period
)
SELECT c.*, p.vstart AS fair_vstart, p.vstart + 1 / p.weight AS fair_pass
FROM claimed c JOIN picked p ON p.tenant = c.tenant AND p.job_id = c.job_id
ORDER BY p.pos
