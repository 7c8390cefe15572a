"""What a job's workflow is started with: its id, its policy and its priority.

Shared by the runner (which starts workflows and schedules) and the activities (which
resolve a policy for a producer that had none); it imports neither.
"""

from __future__ import annotations

import uuid

from temporalio.common import Priority

from jobrunner._policy import JobPolicy
from jobrunner.backends.temporal._types import PolicyInput
from jobrunner.registry import HandlerSpec

__all__ = ["policy_input", "temporal_priority", "workflow_id"]


def workflow_id(name: str, job_id: uuid.UUID | str) -> str:
    """The workflow id of a job: ``job-<name>-<job_id>`` (a schedule's: its schedule id)."""
    return f"job-{name}-{job_id}"


def policy_input(source: HandlerSpec | JobPolicy | None) -> PolicyInput:
    """The workflow-side description of a handler's (or a job's stored) policy; defaults when
    unknown."""
    policy = source.policy if isinstance(source, HandlerSpec) else source or JobPolicy()
    retry = policy.retry
    names: list[str] = []
    for entry in retry.non_retryable_errors:
        # Temporal matches ApplicationError.type, which the activity sets to the class name.
        names.append(entry.rsplit(".", 1)[-1] if isinstance(entry, str) else entry.__name__)
    names.append("NonRetryable")
    return PolicyInput(
        max_attempts=retry.max_attempts,
        initial_interval=retry.initial_seconds,
        backoff_coefficient=float(retry.backoff_coefficient),
        max_interval=retry.max_seconds,
        jitter=retry.jitter,
        non_retryable_error_types=names,
        timeout=policy.timeout,
    )


def temporal_priority(priority: int, tenant: str) -> Priority:
    """jobrunner's priority (higher first, 0 by default) as Temporal's Task Queue Priority
    (``priority_key`` 1-5, lower first, 3 by default), with the tenant as fairness key.

    Activities inherit it from the workflow. The fairness key balances tenants on servers with
    task queue fairness enabled and is ignored elsewhere (docs/fairness.md).
    """
    if priority >= 10:
        key = 1
    elif priority > 0:
        key = 2
    elif priority == 0:
        key = 3
    elif priority > -10:
        key = 4
    else:
        key = 5
    return Priority(priority_key=key, fairness_key=str(tenant)[:64])
