-- jobrunner 0010: durable steps (ctx.run_step). A durable step's row is a job_details row
-- whose metadata has "durable": true; its completed row holds the stored result every later
-- attempt of the job reads. At most one completed row per (tenant, job, step name): the
-- lease fence already keeps a second attempt from completing a step, this index makes the
-- database refuse it too, and it is the lookup path of begin_durable_step.
-- Building it reads job_details once (rows of ctx.step and attempts are not indexed).

CREATE UNIQUE INDEX IF NOT EXISTS job_details_durable_step_idx
    ON job_details (tenant, job_id, step_name)
    WHERE status = 'completed' AND (metadata ->> 'durable') = 'true';
