"""From a claimed job to an attempt, and from an attempt's outcome to what the store records.

Shared by the queue worker and by anything else that runs claimed jobs itself (the in-memory
runner's ``run_next`` and eager mode), so a claimed job becomes the same attempt everywhere.
"""

from __future__ import annotations

import json

from jobrunner._context import JobContext, JobSink
from jobrunner._execution import Attempt, Completed, Failed, Outcome
from jobrunner._policy import JobPolicy
from jobrunner._queue._store import AttemptRef, ClaimedJob, CompletedAttempt, FailedAttempt
from jobrunner.registry import HandlerSpec, JobHandlerRegistry

__all__ = ["begin_attempt", "outcome_record"]


def begin_attempt(
    job: ClaimedJob, registry: JobHandlerRegistry, sink: JobSink
) -> tuple[Attempt, HandlerSpec | None]:
    """The attempt a claim started, under the job's stored policy (the local handler's when
    the job has none yet), and the local handler (``None``: not registered here)."""
    spec = registry.find(job.name)
    fallback = spec.policy if spec is not None else JobPolicy()
    policy = JobPolicy.from_json(job.policy, fallback=fallback)
    ctx = JobContext(
        job_id=job.job_id,
        name=job.name,
        tenant=job.tenant,
        attempt=job.attempt,
        max_attempts=policy.retry.max_attempts,
        queue=job.queue,
        metadata=dict(job.metadata),
        schedule_id=job.schedule_id,
        lease_token=job.lease_token,
        _sink=sink,
    )
    attempt = Attempt(ctx, job.data, policy)
    if job.run_at is not None:
        attempt.due_at = job.run_at.timestamp()
    return attempt, spec


def outcome_record(
    ref: AttemptRef, attempt: Attempt, outcome: Outcome
) -> CompletedAttempt | FailedAttempt | None:
    """What the store writes for ``outcome``; ``None`` for an abort (whoever stopped the
    attempt records it: the cancel, the lease's new holder, or the worker's release)."""
    if isinstance(outcome, Completed):
        return CompletedAttempt(ref, outcome.result_json, attempt.started_wall, attempt.duration_ms)
    if isinstance(outcome, Failed):
        return FailedAttempt(
            ref,
            json.dumps(outcome.error.to_json()),
            outcome.retry_in,
            attempt.started_wall,
            attempt.duration_ms,
        )
    return None
