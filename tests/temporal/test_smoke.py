from __future__ import annotations

import pytest

from jobrunner import JobStatus

pytestmark = pytest.mark.temporal


async def test_basic(registry, trunner, tworker) -> None:
    async def add(ctx, data):
        return {"sum": data["a"] + data["b"]}

    registry.add("add", add)
    handle = await trunner.schedule_job("add", {"a": 1, "b": 2})
    assert handle.external_id == f"job-add-{handle.job_id}"
    info = await trunner.wait_for_job(handle.job_id, timeout=30)
    assert info.status is JobStatus.COMPLETED, info
    assert info.result == {"sum": 3}
    assert info.runner_type == "temporal"
    assert info.external_run_id
