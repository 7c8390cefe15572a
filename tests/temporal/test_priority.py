"""jobrunner priorities and tenants on Temporal: Task Queue Priority and fairness keys."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry
from jobrunner.backends.temporal._inputs import temporal_priority

pytestmark = pytest.mark.temporal

TENANT = uuid.UUID("7c0e5a1e-0000-4000-8000-000000000001")


@pytest.mark.parametrize(
    ("priority", "key"), [(100, 1), (10, 1), (9, 2), (1, 2), (0, 3), (-1, 4), (-9, 4), (-10, 5)]
)
def test_priority_maps_higher_first_to_lower_key(priority: int, key: int) -> None:
    mapped = temporal_priority(priority, str(TENANT))
    assert mapped.priority_key == key
    assert mapped.fairness_key == str(TENANT)


async def test_workflow_carries_priority_and_tenant_fairness_key(
    trunner: Any, registry: JobHandlerRegistry
) -> None:
    async def ok(ctx: Any, data: dict[str, Any]) -> None:
        return None

    registry.add("prio-job", ok)
    urgent = await trunner.schedule_job("prio-job", {}, tenant=TENANT, priority=20)
    plain = await trunner.schedule_job("prio-job", {}, tenant=TENANT)
    for handle, key in ((urgent, 1), (plain, 3)):
        info = await trunner.get_job_status(handle.job_id, tenant=TENANT)
        assert info is not None and info.external_id
        described = await trunner.client.get_workflow_handle(info.external_id).describe()
        priority = described.raw_description.workflow_execution_info.priority
        assert priority.priority_key == key
        assert priority.fairness_key == str(TENANT)
