-- The PostgreSQL backend's worker: claim, heartbeat, finish, rescue, release.
-- Every outcome is fenced by (tenant, job_id, lease_token, status = 'processing'): a worker that
-- lost its lease can change nothing.
-- listen_channel has no comment of its own on purpose: monitoring (and the chaos suite) finds
-- listener connections by pg_stat_activity.query starting with LISTEN. LISTEN takes no
-- parameters: its {channel} is an identifier (Queries.with_identifiers).

-- name: claim_jobs
-- The claim of every worker while no concurrency or rate limit exists (docs/fairness.md): no
-- lock beyond the rows it takes, so claims run side by side under SKIP LOCKED. Per queue, a
-- skip scan of jobs_live_claim_idx (queue, tenant, priority DESC, run_at, job_id) finds the
-- tenants with claimable jobs (two probes for a single-tenant queue). Each tenant's share of
-- the batch (its quota) is decided before any row is locked: with one tenant, all of it; fair
-- (weighted round-robin), its slots among the first `limit` of the stride sequence
-- eff + i / weight, eff being the worker's pass for the tenant (passed in: the scheduling state
-- is the worker's, nothing shared is written); not fair, its jobs among the first `limit` by
-- priority. Then each tenant's first `quota` jobs are read in index order and locked (SKIP
-- LOCKED moves on within the tenant), tenants that ran dry leave their share to the others
-- (one fill round), and the rows are updated by ctid.
-- The flow_state guard (FOR SHARE, one InitPlan): once a limit exists (enabled) or the rules
-- changed since the worker read them (version), this claims nothing and the worker re-reads
-- the state; a change commits only after every claim in flight that read the row, and a claim
-- that waited for it reads the new row, so no claim commits past a pause or a new limit.
WITH RECURSIVE
tq AS (
    SELECT q.queue,
           (SELECT j.tenant FROM {schema}.jobs_live j
            WHERE j.queue = q.queue AND j.status IN ('pending', 'queued', 'retrying')
              AND j.runner_type = 'postgres'
            -- priority too: only the claim index gives this order (ORDER BY tenant alone let
            -- the planner walk the primary key, filtering on queue)
            ORDER BY j.tenant, j.priority DESC LIMIT 1) AS tenant
    FROM unnest(%(queues)s::text[]) AS q(queue)
    WHERE NOT coalesce((SELECT s.enabled OR s.version <> %(version)s::bigint
                        FROM {schema}.flow_state s WHERE s.id FOR SHARE), false)
    UNION ALL
    SELECT tq.queue,
           (SELECT j.tenant FROM {schema}.jobs_live j
            WHERE j.queue = tq.queue AND j.status IN ('pending', 'queued', 'retrying')
              AND j.runner_type = 'postgres' AND j.tenant > tq.tenant
            ORDER BY j.tenant, j.priority DESC LIMIT 1)
    FROM tq WHERE tq.tenant IS NOT NULL
),
rules AS MATERIALIZED (
    SELECT r.tenant, r.name, r.paused, r.weight FROM {schema}.flow_rules r
    WHERE r.paused OR r.weight IS NOT NULL
),
tenants AS MATERIALIZED (
    SELECT tq.queue, tq.tenant,
           coalesce(w.weight, 1)::float8 AS weight,
           greatest(coalesce(p.pass, %(vclock)s::float8), %(vclock)s::float8) AS eff,
           ARRAY(SELECT r.name FROM rules r
                 WHERE r.paused AND r.name IS NOT NULL
                   AND (r.tenant IS NULL OR r.tenant = tq.tenant)) AS blocked
    FROM tq
    LEFT JOIN rules w ON w.tenant = tq.tenant AND w.name IS NULL
    LEFT JOIN unnest(%(pass_tenants)s::uuid[], %(pass_values)s::float8[]) AS p(tenant, pass)
           ON p.tenant = tq.tenant
    WHERE tq.tenant IS NOT NULL AND NOT coalesce(w.paused, false)
),
tt AS MATERIALIZED (SELECT DISTINCT tenant, weight, eff FROM tenants),
bound AS MATERIALIZED (
    -- at least `limit` stride slots start at or before v (every tenant has its weight's share
    -- of limit / sum(weight) after the last eff), so no tenant needs slots past it
    SELECT count(*) AS n,
           least(max(eff) + %(limit)s::float8 / sum(weight),
                 min(eff + (%(limit)s - 1) / weight)) AS v
    FROM tt
),
quota AS MATERIALIZED (
    SELECT tt.tenant, %(limit)s::bigint AS quota FROM tt WHERE (SELECT n FROM bound) = 1
    UNION ALL
    SELECT s.tenant, count(*) FROM (
        SELECT tt.tenant FROM tt, bound b,
             generate_series(0, least(%(limit)s - 1, ceil((b.v - tt.eff) * tt.weight)::int)) g(i)
        WHERE %(fair)s::boolean AND b.n > 1
        ORDER BY tt.eff + g.i / tt.weight, tt.tenant
        LIMIT %(limit)s
    ) s GROUP BY s.tenant
    UNION ALL
    SELECT h.tenant, count(*) FROM (
        SELECT t.tenant FROM tenants t
        CROSS JOIN LATERAL (
            SELECT j.priority, j.run_at, j.job_id FROM {schema}.jobs_live j
            WHERE j.queue = t.queue AND j.tenant = t.tenant
              AND j.status IN ('pending', 'queued', 'retrying') AND j.runner_type = 'postgres'
              AND j.run_at <= now()
              AND CASE WHEN cardinality(t.blocked) = 0 THEN true
                       ELSE j.type <> ALL (t.blocked) END
            ORDER BY j.priority DESC, j.run_at, j.job_id
            LIMIT %(limit)s
        ) c
        WHERE NOT %(fair)s::boolean AND (SELECT n FROM bound) > 1
        ORDER BY c.priority DESC, c.run_at, c.job_id
        LIMIT %(limit)s
    ) h GROUP BY h.tenant
),
r1 AS MATERIALIZED (
    SELECT t.tenant, c.* FROM tenants t
    JOIN quota q ON q.tenant = t.tenant
    CROSS JOIN LATERAL (
        SELECT j.ctid AS row_ctid, j.job_id, j.priority, j.run_at FROM {schema}.jobs_live j
        WHERE j.queue = t.queue AND j.tenant = t.tenant
          AND j.status IN ('pending', 'queued', 'retrying') AND j.runner_type = 'postgres'
          AND j.run_at <= now()
          -- CASE, not a bare "<> ALL (array)": the planner estimates that at one row and
          -- would sort a whole tenant's backlog instead of reading the index in order
          AND CASE WHEN cardinality(t.blocked) = 0 THEN true
                   ELSE j.type <> ALL (t.blocked) END
        ORDER BY j.priority DESC, j.run_at, j.job_id
        LIMIT q.quota
        FOR UPDATE SKIP LOCKED
    ) c
),
short AS MATERIALIZED (
    SELECT %(limit)s - (SELECT count(*) FROM r1) AS k,
           ARRAY(SELECT q.tenant FROM quota q
                 WHERE q.quota <= (SELECT count(*) FROM r1 WHERE r1.tenant = q.tenant)) AS unspent
),
r2 AS MATERIALIZED (
    -- fill: what tenants that ran dry left over goes to those that did not
    SELECT t.tenant, c.* FROM tenants t
    CROSS JOIN LATERAL (
        SELECT j.ctid AS row_ctid, j.job_id, j.priority, j.run_at FROM {schema}.jobs_live j
        WHERE j.queue = t.queue AND j.tenant = t.tenant
          AND j.status IN ('pending', 'queued', 'retrying') AND j.runner_type = 'postgres'
          AND j.run_at <= now()
          AND CASE WHEN cardinality(t.blocked) = 0 THEN true
                   ELSE j.type <> ALL (t.blocked) END
          AND j.job_id <> ALL (ARRAY(SELECT r1.job_id FROM r1 WHERE r1.tenant = t.tenant))
        ORDER BY j.priority DESC, j.run_at, j.job_id
        LIMIT (SELECT k FROM short)
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE (SELECT k FROM short) > 0 AND t.tenant = ANY ((SELECT unspent FROM short)::uuid[])
),
ranked AS (
    SELECT c.*, t.eff, t.weight,
           row_number() OVER (PARTITION BY c.tenant
                              ORDER BY c.priority DESC, c.run_at, c.job_id) AS rn
    FROM (SELECT * FROM r1 UNION ALL SELECT * FROM r2) c
    JOIN tt t ON t.tenant = c.tenant
),
picked AS MATERIALIZED (
    SELECT r.row_ctid, r.tenant, r.job_id, r.weight,
           CASE WHEN %(fair)s::boolean THEN r.eff + (r.rn - 1) / r.weight END AS vstart,
           row_number() OVER () AS pos
    FROM (
        SELECT * FROM ranked
        ORDER BY CASE WHEN %(fair)s::boolean THEN eff + (rn - 1) / weight ELSE 0 END,
                 priority DESC, run_at, tenant, job_id
        LIMIT %(limit)s
    ) r
),
claimed AS (
    UPDATE {schema}.jobs_live j
    SET status = 'processing',
        attempts = j.attempts + 1,
        lease_token = j.lease_token + 1,
        worker_id = %(worker_id)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = now(),
        updated_at = timezone('utc', now())
    WHERE j.ctid = ANY (ARRAY(SELECT row_ctid FROM picked))
    -- What the worker reads (_store._claimed). The policy as text: a claim's jobs share a
    -- few, each parsed once per worker; an empty metadata as NULL: nothing to parse.
    RETURNING j.tenant, j.job_id, j.type, j.data, j.attempts, j.lease_token, j.queue,
              nullif(j.metadata, '{{}}'::jsonb) AS metadata, j.schedule_id,
              j.policy::text AS policy, j.run_at
)
SELECT c.*, p.vstart AS fair_vstart, p.vstart + 1 / p.weight AS fair_pass
FROM claimed c JOIN picked p ON p.tenant = c.tenant AND p.job_id = c.job_id
ORDER BY p.pos

-- name: next_due_in
SELECT extract(epoch FROM min(run_at) - now())::float8 AS seconds FROM {schema}.jobs_live
WHERE status IN ('pending', 'queued', 'retrying') AND runner_type = 'postgres'
  AND queue = ANY(%(queues)s::text[])

-- name: complete_jobs
-- The arrays arrive as array literals the worker writes itself (_store.completed_params; psycopg's
-- per-element dumping of lists took a tenth of the worker's CPU), typed by the casts here, so
-- the planner still knows the batch's size; started: epoch seconds.
WITH done AS (
    SELECT d.tenant, d.job_id, d.token, d.result, to_timestamp(d.started) AS started_at,
           d.duration_ms
    FROM unnest(%(tenants)s::uuid[], %(job_ids)s::uuid[], %(tokens)s::bigint[],
                %(results)s::text[], %(started)s::float8[], %(durations)s::float8[])
        AS d(tenant, job_id, token, result, started, duration_ms)
), updated AS (
    UPDATE {schema}.jobs j
    SET status = 'completed', result = d.result::jsonb, error = NULL, progress = 100,
        completed_at = now(), updated_at = timezone('utc', now()),
        lease_expires_at = NULL, worker_id = NULL
    FROM done d
    WHERE j.tenant = d.tenant AND j.job_id = d.job_id AND j.lease_token = d.token
      -- `::text` on purpose (docs/performance.md): with `status = 'processing'` the planner
      -- could drive the join from jobs_lease_idx, whose row estimate is ~1 whenever ANALYZE
      -- ran with few jobs running; the nested loop then compared every running job with
      -- every outcome (seconds per flush). Batch rows must drive the join through the pkey.
      -- Since 0009 the status test is an InitPlan's array, known only when the statement
      -- runs: it proves no partial index's predicate and is estimated without the status
      -- statistics (stale more often than not on a queue), so the batch drives the join
      -- through each partition's primary key (one probe of jobs_finished's per outcome,
      -- instead of scanning the history as a `::text` filter on the parent made it do).
      AND j.status = ANY ((SELECT '{{processing}}'::{schema}.job_status[])::{schema}.job_status[])
      -- Known when planning, and no partial index's predicate: prunes jobs_finished from the
      -- plan. Probing it per outcome was the plan's weak spot: planned while jobs_finished
      -- looked empty (a new database, a generic plan made at a worker's first flush), the
      -- probe took the tenant's status index and read every finished job of the tenant.
      AND j.status NOT IN ('completed', 'failed', 'cancelled')
    RETURNING j.tenant, j.job_id, j.attempts, d.started_at, d.duration_ms
)
INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, processed_at, retry_count,
                                  metadata)
SELECT tenant, job_id, 'attempt', 'completed', timezone('utc', now()), attempts,
       jsonb_build_object('started_at', started_at, 'duration_ms', duration_ms,
                          'worker_id', %(worker_id)s::text)
FROM updated
RETURNING job_id

-- name: fail_jobs
-- The database enforces the retry policy: a retry is honoured only while attempts remain
-- (attempts < max_attempts); otherwise the job ends `failed`, whatever retry_in the caller sent.
-- The arrays: as in complete_jobs.
WITH failed AS (
    SELECT f.tenant, f.job_id, f.token, f.error, f.retry_in,
           to_timestamp(f.started) AS started_at, f.duration_ms
    FROM unnest(%(tenants)s::uuid[], %(job_ids)s::uuid[], %(tokens)s::bigint[],
                %(errors)s::text[], %(retry_in)s::float8[], %(started)s::float8[],
                %(durations)s::float8[])
        AS f(tenant, job_id, token, error, retry_in, started, duration_ms)
), updated AS (
    UPDATE {schema}.jobs j
    SET status = (CASE WHEN f.retry_in IS NULL OR j.attempts >= j.max_attempts THEN 'failed'
                       ELSE 'retrying' END)
                 ::{schema}.job_status,
        error = f.error::jsonb,
        run_at = CASE WHEN f.retry_in IS NULL OR j.attempts >= j.max_attempts THEN j.run_at
                      ELSE now() + make_interval(secs => f.retry_in) END,
        completed_at = CASE WHEN f.retry_in IS NULL OR j.attempts >= j.max_attempts
                            THEN now() END,
        updated_at = timezone('utc', now()),
        lease_expires_at = NULL, worker_id = NULL
    FROM failed f
    WHERE j.tenant = f.tenant AND j.job_id = f.job_id AND j.lease_token = f.token
      -- the status tests: see complete_jobs
      AND j.status = ANY ((SELECT '{{processing}}'::{schema}.job_status[])::{schema}.job_status[])
      AND j.status NOT IN ('completed', 'failed', 'cancelled')
    RETURNING j.tenant, j.job_id, j.attempts, j.run_at,
              CASE WHEN j.attempts < j.max_attempts THEN f.retry_in END AS retry_in,
              f.error::jsonb AS error,
              f.started_at, f.duration_ms
), closed_steps AS (
    -- Steps the failed attempt left open (a timeout or a cancel stops the handler inside
    -- them, and its own writes are fenced from then on) fail with the attempt's error.
    UPDATE {schema}.job_details d
    SET status = 'failed', result = u.error, processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb)
                   || jsonb_build_object('finished_at', now())
    FROM updated u
    WHERE d.tenant = u.tenant AND d.job_id = u.job_id AND d.status = 'processing'
)
INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                  retry_count, metadata)
SELECT tenant, job_id, 'attempt', 'failed', error, timezone('utc', now()), attempts,
       jsonb_build_object('started_at', started_at, 'duration_ms', duration_ms,
                          'worker_id', %(worker_id)s::text,
                          'next_run_at', CASE WHEN retry_in IS NULL THEN NULL ELSE run_at END)
FROM updated
RETURNING job_id

-- name: heartbeat
-- Waits for rows other statements hold (never skips one: a held job missing from the answer
-- counts as a lost lease). One that an outcome or cancel moves to jobs_finished meanwhile
-- fails the statement (0009), which the store runs again.
UPDATE {schema}.jobs_live
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE worker_id = %(worker_id)s AND status = 'processing'
RETURNING tenant, job_id, lease_token

-- name: rescue_expired
WITH expired AS (
    SELECT tenant, job_id FROM {schema}.jobs
    WHERE status = 'processing' AND lease_expires_at < now() AND runner_type = 'postgres'
    ORDER BY lease_expires_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs j
    SET status = (CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'retrying' END)
                 ::{schema}.job_status,
        run_at = now(),
        completed_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        error = jsonb_build_object(
            'type', 'jobrunner.LeaseExpired',
            'message', 'the worker running this attempt stopped heartbeating (crashed, killed '
                       'or disconnected); its lease expired',
            'traceback', NULL),
        -- back in the queue, the job starts over; a final failure keeps how far it got
        progress = CASE WHEN j.attempts >= j.max_attempts THEN j.progress ELSE 0 END,
        progress_message = CASE WHEN j.attempts >= j.max_attempts THEN j.progress_message END,
        updated_at = timezone('utc', now()),
        lease_expires_at = NULL, worker_id = NULL
    FROM expired e
    WHERE j.tenant = e.tenant AND j.job_id = e.job_id
    RETURNING j.tenant, j.job_id, j.attempts, j.status, j.queue, j.error
), closed_steps AS (
    -- The dead attempt's open steps: nobody will ever finish them (its writes are fenced by
    -- status 'processing', which the job just left). Attempt rows are never 'processing'.
    UPDATE {schema}.job_details d
    SET status = 'failed',
        result = jsonb_build_object(
            'type', 'jobrunner.LeaseExpired',
            'message', 'the attempt''s lease expired before this step finished (its worker '
                       'crashed, was killed or lost the database)',
            'traceback', NULL),
        processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb)
                   || jsonb_build_object('finished_at', now(), 'lease_expired', true)
    FROM rescued r
    WHERE d.tenant = r.tenant AND d.job_id = r.job_id AND d.status = 'processing'
), attempt_rows AS (
    INSERT INTO {schema}.job_details (tenant, job_id, step_name, status, result, processed_at,
                                      retry_count, metadata)
    SELECT tenant, job_id, 'attempt', 'failed', error, timezone('utc', now()), attempts,
           jsonb_build_object('lease_expired', true)
    FROM rescued
)
SELECT job_id, status, queue FROM rescued

-- name: release_jobs
-- Graceful shutdown: hand unfinished attempts back without counting them against the policy.
-- The job starts over: progress is reset and the attempt's open steps are closed.
WITH released AS (
    UPDATE {schema}.jobs_live j
    SET status = 'queued', attempts = greatest(j.attempts - 1, 0), run_at = now(),
        progress = 0, progress_message = NULL,
        lease_expires_at = NULL, worker_id = NULL, updated_at = timezone('utc', now())
    FROM unnest(%(tenants)s::uuid[], %(job_ids)s::uuid[], %(tokens)s::bigint[])
        AS r(tenant, job_id, token)
    WHERE j.tenant = r.tenant AND j.job_id = r.job_id AND j.lease_token = r.token
      AND j.status::text = 'processing'  -- `::text`: see complete_jobs
    RETURNING j.tenant, j.job_id, j.queue
), closed_steps AS (
    UPDATE {schema}.job_details d
    SET status = 'cancelled',
        result = jsonb_build_object(
            'type', 'jobrunner.Released',
            'message', 'the worker shut down before this step finished; the job was queued '
                       'again',
            'traceback', NULL),
        processed_at = timezone('utc', now()),
        metadata = coalesce(d.metadata, '{{}}'::jsonb)
                   || jsonb_build_object('finished_at', now(), 'released', true)
    FROM released r
    WHERE d.tenant = r.tenant AND d.job_id = r.job_id AND d.status = 'processing'
)
SELECT job_id, pg_notify(%(channel)s, queue) AS notified FROM released

-- name: notify_jobs
SELECT pg_notify(%(channel)s, %(payload)s)

-- name: listen_channel
LISTEN {channel}

-- name: pin_policy
-- A job enqueued without a policy (an older release, or a producer without the handler) takes
-- the claiming worker's; from then on it is the job's own. Fenced by the attempt's token.
UPDATE {schema}.jobs_live
SET policy = %(policy)s, max_attempts = %(max_attempts)s
WHERE tenant = %(tenant)s AND job_id = %(job_id)s AND lease_token = %(token)s
  AND policy IS NULL
