"""The same flows against real PostgreSQL (fixture ``job_runner``: a schema per test).

The plugin finds a database by itself (``--jobrunner-dsn``, ``JOBRUNNER_TEST_DSN``, a local
server, testcontainers, or a private cluster).
"""

from __future__ import annotations

import uuid

from jobrunner import JobRunner, JobStatus
from jobrunner.testing import adrain, assert_enqueued, assert_not_enqueued

from billing_app import close_month
from billing_app.gateway import gateway
from billing_app.jobs import OUTBOX

TENANT = uuid.uuid4()
USAGE = {"acme": [{"qty": 3, "unit_cents": 1000}], "initech": [{"qty": 1, "unit_cents": 250}]}


async def test_month_end_on_postgres(job_runner: JobRunner) -> None:
    handles = await close_month(job_runner, TENANT, "2030-01", USAGE)
    assert_enqueued(job_runner, "generate-invoice", tenant=TENANT, status="queued", count=2)

    await adrain(job_runner)

    for handle in handles:
        info = await job_runner.get_job_status(handle.job_id, tenant=TENANT)
        assert info is not None
        assert info.status is JobStatus.COMPLETED
        assert info.runner_type == "postgres"
    assert_enqueued(job_runner, "send-invoice-email", tenant=TENANT, status="completed", count=2)
    assert sorted(m["invoice"] for m in OUTBOX) == ["INV-2030-01-acme", "INV-2030-01-initech"]


async def test_retries_after_an_outage_do_not_wait_out_the_backoff(job_runner: JobRunner) -> None:
    gateway.outages = 1
    [handle] = await close_month(job_runner, TENANT, "2030-01", {"acme": USAGE["acme"]})

    await adrain(job_runner)  # the 30 s backoff is made due at once

    info = await job_runner.get_job_status(handle.job_id, tenant=TENANT)
    assert info is not None
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 2
    assert gateway.charges == [("acme", 3000)]


async def test_another_tenant_sees_nothing(job_runner: JobRunner) -> None:
    [handle] = await close_month(job_runner, TENANT, "2030-01", {"acme": USAGE["acme"]})
    other = uuid.uuid4()
    assert await job_runner.get_job_status(handle.job_id, tenant=other) is None
    assert not await job_runner.cancel_job(handle.job_id, tenant=other)
    assert_not_enqueued(job_runner, "generate-invoice", tenant=other)
