-- The bulk enqueue of the PostgreSQL backend (PostgresJobRunner.schedule_jobs): a first
-- statement, then one COPY of every job of the call into the live partition (0009).
-- {schema} is the quoted schema identifier; every value is a bound parameter.

-- name: bulk_enqueue_start
-- What the COPY cannot compute itself: the transaction's now() (created_at, updated_at and the
-- queued/pending choice of insert_job, exactly) and one NOTIFY for the whole call, delivered at
-- commit (and dropped with the COPY if it fails, or with the caller's savepoint).
SELECT now() AS now,
       CASE WHEN %(notify)s::boolean THEN pg_notify(%(channel)s, %(queue)s) END AS notified

-- name: copy_jobs_live
-- Binary COPY, rows encoded by backends/postgres/_enqueue.py (BulkJobs) in this column order:
-- what the batch shares first, then each job's id and data. No singleton key (schedule_jobs
-- takes none) and client-generated ids, so no row can conflict; straight into jobs_live
-- (no partition routing), like insert_job.
COPY {schema}.jobs_live (
    tenant, type, metadata, status, created_at, updated_at, user_id, runner_type, queue,
    priority, run_at, max_attempts, policy, job_id, data
) FROM STDIN (FORMAT BINARY)

-- name: insert_jobs_json
-- The bulk enqueue on a connection whose client encoding is not UTF-8 (the COPY rows are
-- UTF-8): one statement per batch, the payloads as ONE jsonb array zipped with the ids.
WITH rows AS (
    SELECT * FROM ROWS FROM (unnest(%(job_ids)s::uuid[]),
                             jsonb_array_elements(%(datas)s::jsonb)) AS r(job_id, data)
), inserted AS (
    INSERT INTO {schema}.jobs_live (
        tenant, job_id, type, metadata, status, created_at, updated_at, user_id, runner_type,
        queue, priority, run_at, data, max_attempts, policy
    )
    SELECT %(tenant)s, r.job_id, %(name)s, %(metadata)s,
           (CASE WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= now()
                 THEN 'queued' ELSE 'pending' END)::{schema}.job_status,
           timezone('utc', now()), timezone('utc', now()), %(user_id)s, %(runner_type)s,
           %(queue)s, %(priority)s, coalesce(%(run_at)s::timestamptz, now()), r.data,
           %(max_attempts)s, %(policy)s
    FROM rows r
    RETURNING job_id
)
SELECT count(*) AS inserted FROM inserted
