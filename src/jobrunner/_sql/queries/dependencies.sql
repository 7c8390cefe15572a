-- Job dependencies (migration 0012): the enqueue of jobs that wait for other jobs, what a
-- handler reads of its dependencies, and what monitoring shows. The release of dependents is
-- the trigger release_dependents() of 0012, run when a job with dependents becomes final.
-- {schema} is the quoted schema identifier; every value is a bound parameter.

-- name: lock_dependencies
-- The dependencies of a job about to be written, locked in job_id order until the enqueue
-- commits: an outcome that would make one final waits, then sees has_dependents and the new
-- edges (its release trigger reads them); a dependency that became final first is read final
-- (a row moved to jobs_finished while this waited fails the statement, run again). Same tenant
-- only: another tenant's id is as unknown as an id that never existed.
WITH locked AS (
    SELECT j.job_id, j.status::text AS status FROM {schema}.jobs j
    WHERE j.tenant = %(tenant)s AND j.job_id = ANY (%(depends_on)s::uuid[])
    ORDER BY j.job_id
    FOR NO KEY UPDATE
)
SELECT coalesce(array_agg(job_id), '{{}}') AS found,
       count(*) FILTER (WHERE status = 'active') AS schedules,
       count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS live,
       (array_agg(job_id ORDER BY job_id)
            FILTER (WHERE status IN ('failed', 'cancelled')))[1] AS failed_id,
       (array_agg(status ORDER BY job_id)
            FILTER (WHERE status IN ('failed', 'cancelled')))[1] AS failed_status
FROM locked

-- name: insert_dependent_jobs
-- Jobs with dependencies (one, or a schedule_jobs batch sharing them), after
-- lock_dependencies in the same transaction: the rows (waiting while a dependency is live;
-- cancelled, naming it, when one already failed and the jobs do not run on failure; else
-- queued or pending as insert_job), one edge per job and dependency (already resolved for a
-- final dependency), and has_dependents on the live dependencies. Through {schema}.jobs: a
-- cancelled row goes to jobs_finished.
WITH rows AS (
    SELECT * FROM ROWS FROM (unnest(%(job_ids)s::uuid[]),
                             jsonb_array_elements(%(datas)s::jsonb)) AS r(job_id, data)
), deps AS (
    SELECT j.job_id, j.status::text IN ('completed', 'failed', 'cancelled') AS final
    FROM {schema}.jobs j
    WHERE j.tenant = %(tenant)s AND j.job_id = ANY (%(depends_on)s::uuid[])
), inserted AS (
    INSERT INTO {schema}.jobs (
        tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
        external_id, queue, priority, run_at, data, max_attempts, policy, dependencies_left,
        parent_job_id, completed_at, error
    )
    SELECT %(tenant)s, r.job_id, %(name)s,
           CASE WHEN %(cancel_reason)s::text IS NULL THEN %(metadata)s::jsonb
                ELSE coalesce(%(metadata)s::jsonb, '{{}}'::jsonb)
                     || jsonb_build_object('cancel_reason', %(cancel_reason)s::text,
                                           'cancelled_by', 'dependency') END,
           (CASE WHEN %(cancel_reason)s::text IS NOT NULL THEN 'cancelled'
                 WHEN %(waiting)s::boolean THEN 'waiting'
                 WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= now()
                 THEN 'queued' ELSE 'pending' END)::{schema}.job_status,
           timezone('utc', now()), timezone('utc', now()), %(user_id)s, %(runner_type)s,
           %(external_prefix)s::text || r.job_id::text,
           %(queue)s, %(priority)s, coalesce(%(run_at)s::timestamptz, now()), r.data,
           %(max_attempts)s, %(policy)s, (SELECT count(*) FROM deps WHERE NOT deps.final),
           %(parent_job_id)s,
           CASE WHEN %(cancel_reason)s::text IS NOT NULL THEN now() END,
           CASE WHEN %(cancel_reason)s::text IS NOT NULL
                THEN jsonb_build_object('type', 'cancelled', 'message', %(cancel_reason)s::text,
                                        'traceback', NULL) END
    FROM rows r
    RETURNING job_id
), edges AS (
    INSERT INTO {schema}.job_dependencies (tenant, depends_on, job_id, run_on_failure, resolved)
    SELECT %(tenant)s, d.job_id, r.job_id, %(run_on_failure)s, d.final
    FROM rows r CROSS JOIN deps d
), marked AS (
    UPDATE {schema}.jobs_live j SET has_dependents = true
    FROM deps d
    WHERE j.tenant = %(tenant)s AND j.job_id = d.job_id AND NOT d.final AND NOT j.has_dependents
)
SELECT count(*) AS inserted,
       CASE WHEN %(notify)s::boolean AND NOT %(waiting)s::boolean
                 AND %(cancel_reason)s::text IS NULL
            THEN pg_notify(%(channel)s, %(queue)s) END AS notified
FROM inserted

-- name: dependency_results
-- ctx.dependency_results(): each dependency of the job with its status and stored result.
SELECT e.depends_on AS job_id, j.status, j.result
FROM {schema}.job_dependencies e
JOIN {schema}.jobs j ON j.tenant = e.tenant AND j.job_id = e.depends_on
WHERE e.tenant = %(tenant)s AND e.job_id = %(job_id)s
ORDER BY e.depends_on

-- name: job_relations
-- get_job_details: the job's dependencies, dependents and children with their names and
-- statuses (at most `limit` of each kind, oldest first).
(SELECT 'dependency' AS relation, j.job_id, j.type, j.status
 FROM {schema}.job_dependencies e
 JOIN {schema}.jobs j ON j.tenant = e.tenant AND j.job_id = e.depends_on
 WHERE e.tenant = %(tenant)s AND e.job_id = %(job_id)s
 ORDER BY j.job_id LIMIT %(limit)s)
UNION ALL
(SELECT 'dependent', j.job_id, j.type, j.status
 FROM {schema}.job_dependencies e
 JOIN {schema}.jobs j ON j.tenant = e.tenant AND j.job_id = e.job_id
 WHERE e.tenant = %(tenant)s AND e.depends_on = %(job_id)s
 ORDER BY j.job_id LIMIT %(limit)s)
UNION ALL
(SELECT 'child', j.job_id, j.type, j.status
 FROM {schema}.jobs j
 WHERE j.tenant = %(tenant)s AND j.parent_job_id = %(job_id)s
 ORDER BY j.job_id LIMIT %(limit)s)

-- name: sched_lock_previous_run
-- depends_on_previous: the schedule's previous run, locked until the tick's transaction
-- commits (as lock_dependencies: its outcome then sees the new edge). `live`: not final yet.
SELECT j.job_id, j.status::text NOT IN ('completed', 'failed', 'cancelled') AS live
FROM {schema}.jobs j
WHERE j.tenant = %(tenant)s AND j.job_id = %(job_id)s
FOR NO KEY UPDATE

-- name: sched_chain_runs
-- depends_on_previous: the runs just inserted (job_ids, in tick order) wait each for the one
-- before, the first for the previous run when it is live (`previous`, else NULL), whatever
-- its outcome (run_on_failure). One UPDATE per row (a row updated twice in one statement
-- would keep only the first change).
WITH runs AS (
    SELECT r.job_id,
           coalesce(lag(r.job_id) OVER (ORDER BY r.n), %(previous)s::uuid) AS after
    FROM unnest(%(job_ids)s::uuid[]) WITH ORDINALITY AS r(job_id, n)
), edges AS (
    INSERT INTO {schema}.job_dependencies (tenant, depends_on, job_id, run_on_failure)
    SELECT %(tenant)s, r.after, r.job_id, true FROM runs r WHERE r.after IS NOT NULL
), targets AS (
    SELECT r.job_id, r.after IS NOT NULL AS waits,
           EXISTS (SELECT 1 FROM runs n WHERE n.after = r.job_id) AS awaited
    FROM runs r
    UNION ALL
    SELECT %(previous)s::uuid, false, true WHERE %(previous)s::uuid IS NOT NULL
)
UPDATE {schema}.jobs_live j
SET status = CASE WHEN t.waits THEN 'waiting'::{schema}.job_status ELSE j.status END,
    dependencies_left = CASE WHEN t.waits THEN 1 ELSE j.dependencies_left END,
    has_dependents = j.has_dependents OR t.awaited
FROM targets t
WHERE j.tenant = %(tenant)s AND j.job_id = t.job_id

-- name: temporal_release_state
-- A waiting Temporal workflow's check: its row's status and seconds until its run_at.
SELECT status::text AS status,
       greatest(extract(epoch FROM run_at - now()), 0)::float8 AS due_in
FROM {schema}.jobs
WHERE tenant = %(tenant)s AND job_id = %(job_id)s

-- name: temporal_released_dependents
-- The workflows to wake after a job became final: its Temporal dependents no longer waiting
-- (released, or cancelled by its failure) whose rows name a workflow.
SELECT j.external_id
FROM {schema}.job_dependencies e
JOIN {schema}.jobs j ON j.tenant = e.tenant AND j.job_id = e.job_id
WHERE e.tenant = %(tenant)s AND e.depends_on = %(job_id)s
  AND j.runner_type = 'temporal' AND j.status::text <> 'waiting'
  AND j.external_id IS NOT NULL
