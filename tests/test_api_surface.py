"""The public API: the exact ``__all__`` and the names issue #2 fixes."""

from __future__ import annotations

import inspect
import uuid

import jobrunner

EXPECTED_ALL = sorted(
    [
        "ALL_TENANTS",
        "SYSTEM_TENANT",
        "ConfigurationError",
        "DatabaseError",
        "DependencyError",
        "DuplicateHandlerError",
        "DuplicateStepError",
        "HandlerNotFoundError",
        "InvalidArgumentError",
        "JobCancelledError",
        "JobContext",
        "JobDetails",
        "JobError",
        "JobFailedError",
        "JobHandlerRegistry",
        "JobInfo",
        "JobNotFoundError",
        "JobPage",
        "JobRunner",
        "JobRunnerError",
        "JobRunnerFactory",
        "JobScheduler",
        "JobStatus",
        "JobTimeoutError",
        "JobWorker",
        "Metrics",
        "MissedTickPolicy",
        "NonRetryable",
        "NotSupportedError",
        "OverlapPolicy",
        "Retry",
        "RetryPolicy",
        "ScheduleError",
        "StepFencedError",
        "ScheduleInfo",
        "ScheduledJob",
        "Settings",
        "StepInfo",
        "SyncJobContext",
        "SyncJobRunner",
        "SyncJobWorker",
        "UnavailableError",
        "UnknownOptionError",
        "job",
    ]
)


def test_all_is_pinned() -> None:
    assert sorted(jobrunner.__all__) == EXPECTED_ALL
    assert len(set(jobrunner.__all__)) == len(jobrunner.__all__)
    for name in jobrunner.__all__:
        assert hasattr(jobrunner, name), name


def test_issue_names_importable() -> None:
    from jobrunner import (  # noqa: F401 - importability is the test
        JobContext,
        JobHandlerRegistry,
        JobRunner,
        JobRunnerError,
        JobRunnerFactory,
        JobScheduler,
        JobStatus,
        NonRetryable,
        Retry,
        RetryPolicy,
        ScheduledJob,
        job,
    )

    assert inspect.isabstract(JobRunner)
    for method in (
        "schedule_job",
        "schedule_job_at",
        "schedule_jobs",
        "get_job_status",
        "cancel_job",
        "is_healthy",
        "create_worker",
    ):
        assert callable(getattr(JobRunner, method)), method


def test_error_hierarchy_has_one_root() -> None:
    for name in jobrunner.__all__:
        obj = getattr(jobrunner, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj
            not in (
                jobrunner.Retry,
                jobrunner.NonRetryable,
            )
        ):
            assert issubclass(obj, jobrunner.JobRunnerError), name


def test_status_values_and_system_tenant() -> None:
    values = {s.value for s in jobrunner.JobStatus}
    assert {"pending", "queued", "processing", "completed", "failed", "cancelled"} <= values
    assert isinstance(jobrunner.JobStatus.COMPLETED, str)
    assert jobrunner.JobStatus("completed") is jobrunner.JobStatus.COMPLETED
    assert uuid.UUID("00000000-0000-0000-0000-000000000000") == jobrunner.SYSTEM_TENANT


def test_job_context_fields() -> None:
    ctx = jobrunner.JobContext(job_id=uuid.uuid4(), name="n", tenant=uuid.uuid4(), attempt=1)
    for attr in ("job_id", "name", "tenant", "attempt"):
        assert hasattr(ctx, attr)
    assert ctx.attempt == 1
    assert ctx.is_cancelled() is False
    ctx.mark_cancelled()
    assert ctx.is_cancelled() is True


def test_scheduled_job_fields() -> None:
    job_id = uuid.uuid4()
    handle = jobrunner.ScheduledJob(job_id=job_id, external_id=str(job_id))
    assert handle.job_id == job_id and handle.external_id == str(job_id)


def test_typed_errors_keep_their_builtin_bases() -> None:
    """Typed jobrunner errors where Python's built-ins were raised before, still catchable
    as those built-ins."""
    from jobrunner import UnknownOptionError

    assert issubclass(UnknownOptionError, jobrunner.InvalidArgumentError)
    assert issubclass(UnknownOptionError, TypeError)
    assert issubclass(jobrunner.JobTimeoutError, jobrunner.JobRunnerError)
    assert issubclass(jobrunner.JobTimeoutError, TimeoutError)


def test_drain_timeout_is_a_job_timeout_error() -> None:
    import asyncio

    import pytest

    from jobrunner.testing import InMemoryJobRunner, adrain

    registry = jobrunner.JobHandlerRegistry()

    async def hangs(ctx: jobrunner.JobContext, data: dict[str, object]) -> None:
        await asyncio.Event().wait()

    registry.add("hangs", hangs)

    async def go() -> None:
        runner = InMemoryJobRunner(registry=registry)
        await runner.schedule_job("hangs", {})
        with pytest.raises(jobrunner.JobTimeoutError, match="still live: hangs"):
            await adrain(runner, timeout=0.2)

    asyncio.run(go())


def test_every_typed_error_is_importable_from_the_package() -> None:
    """Every JobRunnerError subclass, wherever it is defined, is exported from ``jobrunner``
    (test helpers' errors from ``jobrunner.testing``), so docs can name them all."""
    import importlib
    import pkgutil

    import jobrunner.testing

    for module in pkgutil.walk_packages(jobrunner.__path__, "jobrunner."):
        if ".contrib." in module.name or module.name.endswith("__main__"):
            continue  # integrations need their framework installed
        importlib.import_module(module.name)

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    for error in subclasses(jobrunner.JobRunnerError):
        home = jobrunner.testing if error.__module__.startswith("jobrunner.testing") else jobrunner
        assert error.__name__ in home.__all__, f"{error.__module__}.{error.__name__}"
        assert getattr(home, error.__name__) is error
