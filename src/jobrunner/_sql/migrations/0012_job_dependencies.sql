-- jobrunner 0012: job dependencies (schedule_job(..., depends_on=[...])) and parent jobs
-- (ctx.schedule_job). docs/howto/steps-and-dependencies.md, docs/guarantees.md.
--
-- * status `waiting`: a job whose dependencies have not all finished. It lives in jobs_live
--   (the DEFAULT partition takes every status 0009 did not list) and is in no claim index.
-- * job_dependencies: one row per edge "job_id waits for depends_on" (same tenant).
--   `resolved` turns true exactly once, in the transaction that made depends_on final (or at
--   enqueue, when it already was): the edge's row lock makes a second resolution impossible.
-- * jobs.dependencies_left: the dependent's count of unresolved edges. Each resolution
--   decrements it under the dependent's row lock (READ COMMITTED re-reads the newest version),
--   so of two dependencies finishing at once in two workers exactly one brings it to 0 and
--   releases the job (waiting -> queued, or pending while its run_at is later).
-- * jobs.has_dependents: set by the enqueue of a dependent (under the dependency's row lock):
--   only such rows run the release when they reach a final status, so a job without
--   dependents (the plain drain) pays one boolean test in a trigger's WHEN clause.
-- * jobs.parent_job_id: the job whose handler enqueued this one (ctx.schedule_job).
-- * schedules.depends_on_previous: each tick's job depends on the previous tick's job (edges
--   with run_on_failure: it waits for the previous run to be final, whatever its outcome).
--
-- The release runs in a trigger on arrival in jobs_finished (every final status: outcome
-- batches, cancels, rescues, the Temporal activities). Its statements take a new snapshot, so
-- an edge committed by an enqueue the outcome waited for (the dependency's row lock) is seen.
-- A failed or cancelled dependency cancels its dependents (transitively, level by level, in
-- one trigger call; cancelled dependents get has_dependents = false so their own arrival does
-- not recurse) unless the edge says run_on_failure, which counts it as resolved.
-- ALTER TYPE ... ADD VALUE cannot be used in the transaction that adds it: the trigger
-- function names 'waiting' only in its body, which runs later.
-- Runs with search_path set to the jobrunner schema, in one transaction.

ALTER TYPE job_status ADD VALUE IF NOT EXISTS 'waiting';

ALTER TABLE jobs ADD COLUMN dependencies_left INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN has_dependents BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN parent_job_id UUID;

ALTER TABLE schedules ADD COLUMN depends_on_previous BOOLEAN NOT NULL DEFAULT false;

CREATE INDEX jobs_parent_idx ON jobs (tenant, parent_job_id) WHERE parent_job_id IS NOT NULL;

CREATE TABLE job_dependencies (
    tenant         UUID NOT NULL,
    depends_on     UUID NOT NULL,
    job_id         UUID NOT NULL,
    run_on_failure BOOLEAN NOT NULL DEFAULT false,
    resolved       BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, depends_on, job_id)
);
CREATE INDEX job_dependencies_job_idx ON job_dependencies (tenant, job_id);

CREATE FUNCTION release_dependents() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    frontier uuid[] := ARRAY[NEW.job_id];
    frontier_ok boolean := NEW.status::text = 'completed';
    r_jobs uuid[];
    r_causes uuid[];
    r_bad boolean[];
    doomed uuid[];
    released bigint := 0;
BEGIN
    LOOP
        -- Resolve the frontier's open edges, each exactly once (the edge row is locked and
        -- `resolved` re-checked on its newest version).
        WITH edges AS (
            UPDATE job_dependencies e SET resolved = true
            WHERE e.tenant = NEW.tenant AND e.depends_on = ANY (frontier) AND NOT e.resolved
            RETURNING e.job_id, e.depends_on, NOT frontier_ok AND NOT e.run_on_failure AS bad
        )
        SELECT array_agg(job_id), array_agg(depends_on), array_agg(bad)
        INTO r_jobs, r_causes, r_bad
        FROM edges;
        EXIT WHEN r_jobs IS NULL;

        -- Lock the dependents in one order: two releases touching the same dependents never
        -- wait for each other in a circle.
        PERFORM 1 FROM jobs_live d
        WHERE d.tenant = NEW.tenant AND d.job_id = ANY (r_jobs)
        ORDER BY d.job_id
        FOR NO KEY UPDATE;

        -- Dependents a failed or cancelled dependency dooms: cancelled, naming it.
        WITH r AS (
            SELECT * FROM unnest(r_jobs, r_causes, r_bad) AS r(job_id, cause, bad)
        ), bad AS (
            SELECT DISTINCT ON (r.job_id) r.job_id, r.cause, c.status::text AS cause_status
            FROM r JOIN jobs c ON c.tenant = NEW.tenant AND c.job_id = r.cause
            WHERE r.bad
            ORDER BY r.job_id, r.cause
        ), cancelled AS (
            UPDATE jobs d
            SET status = 'cancelled',
                has_dependents = false,
                lease_token = d.lease_token + 1,
                completed_at = now(),
                updated_at = timezone('utc', now()),
                error = jsonb_build_object(
                    'type', 'cancelled',
                    'message', 'dependency ' || b.cause || ' ' || b.cause_status,
                    'traceback', NULL),
                metadata = coalesce(d.metadata, '{}'::jsonb)
                           || jsonb_build_object(
                               'cancel_reason', 'dependency ' || b.cause || ' ' || b.cause_status,
                               'cancelled_by', 'dependency',
                               'cancelled_dependency', b.cause::text)
            FROM bad b
            WHERE d.tenant = NEW.tenant AND d.job_id = b.job_id AND d.status::text = 'waiting'
            RETURNING d.job_id
        )
        SELECT coalesce(array_agg(job_id), '{}') INTO doomed FROM cancelled;

        -- Every other dependent: as many fewer to wait for; released at 0.
        WITH r AS (
            SELECT * FROM unnest(r_jobs, r_bad) AS r(job_id, bad)
        ), counts AS (
            SELECT r.job_id, count(*)::integer AS n FROM r
            GROUP BY r.job_id
            HAVING NOT bool_or(r.bad)
        ), updated AS (
            UPDATE jobs_live d
            SET dependencies_left = greatest(d.dependencies_left - c.n, 0),
                status = (CASE WHEN d.dependencies_left - c.n > 0 THEN 'waiting'
                               WHEN d.run_at > now() THEN 'pending'
                               ELSE 'queued' END)::job_status,
                updated_at = timezone('utc', now())
            FROM counts c
            WHERE d.tenant = NEW.tenant AND d.job_id = c.job_id AND d.status::text = 'waiting'
            RETURNING d.status
        )
        SELECT released + count(*) FILTER (WHERE status::text <> 'waiting') INTO released
        FROM updated;

        EXIT WHEN cardinality(doomed) = 0;
        frontier := doomed;
        frontier_ok := false;
    END LOOP;
    IF released > 0 THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_jobs', 'dependencies');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_release_dependents
    AFTER INSERT ON jobs_finished
    FOR EACH ROW
    WHEN (NEW.has_dependents)
    EXECUTE FUNCTION release_dependents();
