"""Dependencies as monitoring shows them: ``jobrunner jobs show`` and the dashboard's job page
list a job's dependencies, dependents and children with their statuses (links, escaped HTML),
and the counts include ``waiting``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from jobrunner import JobContext, JobHandlerRegistry, JobStatus
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main
from jobrunner.dashboard import create_app
from jobrunner.testing import adrain

T1 = "11111111-1111-1111-1111-111111111111"
XSS = "<img src=x onerror=alert(1)>"


def _registry() -> JobHandlerRegistry:
    registry = JobHandlerRegistry()

    async def render(ctx: JobContext, data: dict[str, Any]) -> int:
        return 1

    async def close(ctx: JobContext, data: dict[str, Any]) -> None:
        await ctx.schedule_job("render", {"child": True})

    registry.add(XSS, render)
    registry.add("render", render)
    registry.add("close", close)
    return registry


async def _graph(dsn: str, schema: str) -> dict[str, str]:
    async with PostgresJobRunner(dsn, schema=schema, registry=_registry()) as runner:
        parent = await runner.schedule_job("close", tenant=T1)
        await adrain(runner)
        first = await runner.schedule_job(XSS, tenant=T1)
        zipped = await runner.schedule_job("render", tenant=T1, depends_on=[first.job_id])
        details = await runner.get_job_details(parent.job_id, tenant=T1)
        assert details is not None
        [child] = details.children
        metrics = await runner.get_metrics(tenant=T1)
        assert metrics.by_status["waiting"] == 1
    return {
        "parent": str(parent.job_id),
        "child": str(child.job_id),
        "first": str(first.job_id),
        "zip": str(zipped.job_id),
    }


def test_jobs_show_lists_dependencies_dependents_and_children(
    jobrunner_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ids = asyncio.run(_graph(jobrunner_dsn, schema))
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", jobrunner_dsn)
    monkeypatch.setenv("JOBRUNNER_SCHEMA", schema)
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    assert main(["jobs", "show", ids["zip"], "--tenant", T1]) == 0
    out = capsys.readouterr().out
    assert "dependencies" in out
    [line] = [li for li in out.splitlines() if ids["first"] in li]
    assert XSS in line and "queued" in line
    assert main(["jobs", "show", ids["first"], "--tenant", T1]) == 0
    out = capsys.readouterr().out
    [line] = [li for li in out.splitlines() if ids["zip"] in li]
    assert "waiting" in line
    assert main(["jobs", "show", ids["parent"], "--tenant", T1]) == 0
    out = capsys.readouterr().out
    assert "children" in out and ids["child"] in out
    assert main(["jobs", "show", ids["child"], "--tenant", T1, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parent_job_id"] == ids["parent"]
    assert main(["metrics", "--tenant", T1]) == 0
    [line] = [li for li in capsys.readouterr().out.splitlines() if li.strip().startswith("waiting")]
    assert line.split()[-1] == "1"


async def test_the_job_page_links_dependencies_with_statuses_escaped(
    runner: PostgresJobRunner, jobrunner_dsn: str, schema: str
) -> None:
    ids = await asyncio.to_thread(asyncio.run, _graph(jobrunner_dsn, schema))
    transport = httpx.ASGITransport(app=create_app(runner))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as http:
        page = await http.get(f"/jobs/{T1}/{ids['zip']}")
        first_page = await http.get(f"/jobs/{T1}/{ids['first']}")
        child_page = await http.get(f"/jobs/{T1}/{ids['child']}")
        api = await http.get(f"/api/jobs/{T1}/{ids['zip']}")
    assert page.status_code == 200, page.text
    html = page.text
    assert XSS not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert f'href="/jobs/{T1}/{ids["first"]}"' in html
    assert 'data-status="queued"' in html
    assert 'data-status="waiting"' in html  # the job's own badge
    assert f'href="/jobs/{T1}/{ids["zip"]}"' in first_page.text
    assert "Waited for by" in first_page.text
    assert f'href="/jobs/{T1}/{ids["parent"]}"' in child_page.text
    body = api.json()
    assert [d["job_id"] for d in body["dependencies"]] == [ids["first"]]
    assert body["dependencies"][0]["status"] == JobStatus.QUEUED.value
