"""Durable steps as monitoring shows them: ``get_job_details``, ``jobrunner jobs show`` and the
dashboard's job page show each durable step with its stored result (escaped in HTML)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from jobrunner import JobContext, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main
from jobrunner.dashboard import create_app
from jobrunner.testing import adrain

T1 = "11111111-1111-1111-1111-111111111111"
XSS = "<script>window.__pwned = 1</script>"


def _registry() -> JobHandlerRegistry:
    registry = JobHandlerRegistry()

    async def close_cycle(cycle: str) -> dict[str, Any]:
        return {"cycle": cycle, "invoices": 3, "note": XSS}

    async def invoices(ctx: JobContext, data: dict[str, Any]) -> str:
        closed = await ctx.run_step("close-cycle", close_cycle, data["cycle"])
        async with ctx.step("log-only"):
            pass
        if ctx.attempt == 1:
            raise RuntimeError("render failed")
        return f"{closed['invoices']} invoices"

    registry.add("invoices", invoices, retry=RetryPolicy(max_attempts=2, initial_interval=0.01))
    return registry


async def _run_job(dsn: str, schema: str) -> str:
    async with PostgresJobRunner(dsn, schema=schema, registry=_registry()) as runner:
        handle = await runner.schedule_job("invoices", {"cycle": "2024-05"}, tenant=T1)
        await adrain(runner)
        details = await runner.get_job_details(handle.job_id, tenant=T1)
    assert details is not None
    assert details.job.status is JobStatus.COMPLETED
    [durable] = [s for s in details.steps if s.durable]
    assert (durable.step_name, durable.status) == ("close-cycle", JobStatus.COMPLETED)
    assert durable.result == {"cycle": "2024-05", "invoices": 3, "note": XSS}
    assert durable.metadata["tries"] == 1
    assert [s.durable for s in details.steps if s.step_name == "log-only"] == [False, False]
    return str(handle.job_id)


def test_jobs_show_lists_durable_steps_with_their_results(
    jobrunner_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    job_id = asyncio.run(_run_job(jobrunner_dsn, schema))
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", jobrunner_dsn)
    monkeypatch.setenv("JOBRUNNER_SCHEMA", schema)
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    assert main(["jobs", "show", job_id, "--tenant", T1]) == 0
    out = capsys.readouterr().out
    [line] = [li for li in out.splitlines() if "close-cycle" in li]
    assert "close-cycle (durable)" in line
    assert '{"note": "<script>' in line  # the stored result, on one line (jsonb key order)
    log_lines = [li for li in out.splitlines() if "log-only" in li]
    assert len(log_lines) == 2 and all("(durable)" not in li for li in log_lines)
    assert main(["jobs", "show", job_id, "--tenant", T1, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [step] = [s for s in data["steps"] if s["step_name"] == "close-cycle"]
    assert step["metadata"]["durable"] is True
    assert step["result"]["invoices"] == 3


async def test_the_job_page_shows_durable_steps_escaped(
    runner: PostgresJobRunner, jobrunner_dsn: str, schema: str
) -> None:
    job_id = await asyncio.to_thread(asyncio.run, _run_job(jobrunner_dsn, schema))
    transport = httpx.ASGITransport(app=create_app(runner))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as http:
        page = await http.get(f"/jobs/{T1}/{job_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert XSS not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "Stored result" in html
    assert ">durable</span>" in html
