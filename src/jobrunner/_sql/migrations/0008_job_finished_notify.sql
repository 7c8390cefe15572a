-- jobrunner 0008: a job that reaches a final status (completed, failed, cancelled) announces it
-- on the channel <schema>_done with its job id as the payload, whoever wrote the status: the
-- PostgreSQL worker's outcome batches, a cancel, the Temporal activities, a failed workflow
-- start. wait_for_job and ScheduledJob.result() LISTEN on it (one connection per process
-- shared by every waiter) instead of polling. A trigger, not a NOTIFY in each statement, so no
-- writer can forget it; the notification is delivered when the writing transaction commits.
CREATE FUNCTION job_finished_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_done', NEW.job_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_finished_notify
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
          AND NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION job_finished_notify();
