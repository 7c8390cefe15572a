"""Prometheus metrics (issue 16): the dashboard's ``GET /metrics`` and the collector, parsed
with ``prometheus_client``'s own text parser after a known mix of outcomes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobrunner import JobHandlerRegistry, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.dashboard import create_app
from jobrunner.prometheus import JobRunnerCollector
from jobrunner.testing import running_worker

T1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
T2 = uuid.UUID("22222222-2222-2222-2222-222222222222")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], metric: str, /, **labels: str) -> float | None:
    return found.get((metric, frozenset(labels.items())))


@pytest.fixture
def names() -> dict[str, str]:
    """Job names of this test only: the process's counters are shared by every test."""
    suffix = uuid.uuid4().hex[:8]
    return {k: f"{k}-{suffix}" for k in ("ok", "bad", "slow", "later")}


async def run_known_mix(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, names: dict[str, str]
) -> None:
    """3 completed, 2 failed after one retry each, 1 cancelled while running, 2 left queued
    in a queue no worker serves."""
    started = asyncio.Event()

    async def ok(ctx: Any, data: dict[str, Any]) -> int:
        return 1

    async def bad(ctx: Any, data: dict[str, Any]) -> None:
        raise ValueError("nope")

    async def slow(ctx: Any, data: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    registry.add(names["ok"], ok)
    registry.add(names["bad"], bad, retry=RetryPolicy(max_attempts=2, initial_interval=0.01))
    registry.add(names["slow"], slow)
    registry.add(names["later"], ok, queue="later")
    done = [await runner.schedule_job(names["ok"], {}, tenant=T1) for _ in range(3)]
    done += await runner.schedule_jobs(names["bad"], [{}, {}], tenant=T1)
    slow_job = await runner.schedule_job(names["slow"], {}, tenant=T2)
    await runner.schedule_jobs(names["later"], [{}, {}], tenant=T2)
    async with running_worker(runner, queues=["default"], concurrency=4):
        for handle in done:
            await runner.wait_for_job(handle.job_id, tenant=T1, timeout=30)
        await asyncio.wait_for(started.wait(), 30)
        assert await runner.cancel_job(slow_job.job_id, tenant=T2)
        await runner.wait_for_job(slow_job.job_id, tenant=T2, timeout=30)


async def test_dashboard_metrics_give_the_exact_counts(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, names: dict[str, str]
) -> None:
    await run_known_mix(runner, registry, names)
    app = create_app(runner)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    pg = {"queue": "default", "runner_type": "postgres"}
    assert value(found, "jobrunner_jobs_enqueued_total", name=names["ok"], **pg) == 3
    assert value(found, "jobrunner_jobs_enqueued_total", name=names["bad"], **pg) == 2
    assert (
        value(
            found,
            "jobrunner_jobs_enqueued_total",
            name=names["later"],
            queue="later",
            runner_type="postgres",
        )
        == 2
    )
    assert value(found, "jobrunner_jobs_completed_total", name=names["ok"], **pg) == 3
    assert value(found, "jobrunner_jobs_retried_total", name=names["bad"], **pg) == 2
    assert value(found, "jobrunner_jobs_failed_total", name=names["bad"], **pg) == 2
    assert value(found, "jobrunner_jobs_cancelled_total", name=names["slow"], **pg) == 1
    assert value(found, "jobrunner_jobs_completed_total", name=names["bad"], **pg) is None
    # Run time: every attempt (3 ok + 4 bad + 1 cancelled), in cumulative buckets.
    assert value(found, "jobrunner_job_duration_seconds_count", name=names["ok"], **pg) == 3
    assert value(found, "jobrunner_job_duration_seconds_count", name=names["bad"], **pg) == 4
    assert (
        value(found, "jobrunner_job_duration_seconds_bucket", name=names["bad"], le="+Inf", **pg)
        == 4
    )
    assert value(found, "jobrunner_job_queue_wait_seconds_count", name=names["ok"], **pg) == 3
    # Gauges from the database: the two jobs nobody serves, and how long they have waited.
    assert (
        value(found, "jobrunner_jobs", queue="later", status="queued", runner_type="postgres") == 2
    )
    assert not any(k[0] == "jobrunner_jobs" and ("queue", "default") in k[1] for k in found)
    age = value(found, "jobrunner_queue_oldest_due_seconds", queue="later", runner_type="postgres")
    assert age is not None and 0 <= age < 120


async def test_metrics_follow_the_dashboards_auth_and_tenant(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, names: dict[str, str]
) -> None:
    registry.add(names["later"], lambda ctx, data: None, queue="later")
    await runner.schedule_jobs(names["later"], [{}, {}, {}], tenant=T1)
    await runner.schedule_job(names["later"], {}, tenant=T2)

    def auth(request: Any) -> str | None:
        return "ops" if request.headers.get("authorization") == "Bearer ok" else None

    for tenant, expected in ((T1, 3), (T2, 1)):
        app = create_app(runner, auth=auth, tenant=tenant)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as http:
            assert (await http.get("/metrics")).status_code == 401
            response = await http.get("/metrics", headers={"authorization": "Bearer ok"})
            evil = await http.get(
                "/metrics",
                headers={"authorization": "Bearer ok", "host": "attacker.example"},
            )
        assert evil.status_code == 400  # the Host check runs first
        found = samples(response.text)
        jobs = value(
            found, "jobrunner_jobs", queue="later", status="queued", runner_type="postgres"
        )
        assert jobs == expected
        # A tenant's view shows no process-wide counters (they count every tenant's jobs).
        assert not any(k[0].endswith("_total") for k in found)


async def test_collector_for_an_applications_own_registry(
    runner: PostgresJobRunner, registry: JobHandlerRegistry, names: dict[str, str]
) -> None:
    registry.add(names["later"], lambda ctx, data: None, queue="later")
    await runner.schedule_jobs(names["later"], [{}, {}], tenant=T1)
    own = CollectorRegistry()
    own.register(JobRunnerCollector(runner, cache_seconds=0))
    text = (await asyncio.to_thread(generate_latest, own)).decode()
    found = samples(text)
    assert value(found, "jobrunner_metrics_database_up") == 1
    assert (
        value(found, "jobrunner_jobs", queue="later", status="queued", runner_type="postgres") == 2
    )
    assert (
        value(
            found,
            "jobrunner_jobs_enqueued_total",
            name=names["later"],
            queue="later",
            runner_type="postgres",
        )
        == 2
    )
    # The database away: the scrape still answers, saying so.
    broken = PostgresJobRunner("postgresql://127.0.0.1:1/none", registry=registry)
    down = CollectorRegistry()
    down.register(JobRunnerCollector(broken, cache_seconds=0, timeout=1))
    found = samples((await asyncio.to_thread(generate_latest, down)).decode())
    assert value(found, "jobrunner_metrics_database_up") == 0
