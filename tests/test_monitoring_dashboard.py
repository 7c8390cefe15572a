"""Dashboard over HTTP (in-process ASGI): security, scoping, escaping, actions, mounting."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from jobrunner import ALL_TENANTS, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.dashboard import create_app
from jobrunner.testing import running_worker

T1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
T2 = uuid.UUID("22222222-2222-2222-2222-222222222222")
XSS = "<script>window.__pwned = 1</script>"


@pytest.fixture
def handlers(registry: JobHandlerRegistry) -> JobHandlerRegistry:
    async def ok(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def boom(ctx: Any, data: dict[str, Any]) -> None:
        raise RuntimeError(f"bad input {data.get('text', '')}")

    registry.add("ok", ok)
    registry.add("boom", boom, retry=RetryPolicy(max_attempts=1))
    registry.add("idle", ok)
    return registry


def client(app: Any, prefix: str = "") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dash.test" + prefix
    )


@pytest.fixture
async def jobs(runner: PostgresJobRunner, handlers: JobHandlerRegistry) -> dict[str, uuid.UUID]:
    ids = {
        "ok": (await runner.schedule_job("ok", {"n": 1}, tenant=T1)).job_id,
        "failed": (await runner.schedule_job("boom", {"text": XSS}, tenant=T1)).job_id,
        "other": (await runner.schedule_job("boom", {"text": "tenant two"}, tenant=T2)).job_id,
    }
    async with running_worker(runner, concurrency=3):
        for key, job_id in ids.items():
            await runner.wait_for_job(job_id, tenant=T2 if key == "other" else T1, timeout=30)
    ids["queued"] = (await runner.schedule_job("idle", {}, tenant=T1)).job_id
    return ids


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def test_pages_render_and_escape(
    runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]
) -> None:
    async with client(create_app(runner)) as http:
        overview = await http.get("/")
        assert overview.status_code == 200
        assert 'data-metric="failed"' in overview.text
        listing = await http.get("/jobs", params={"status": "failed"})
        assert listing.status_code == 200
        assert str(jobs["failed"]) in listing.text
        assert str(jobs["ok"]) not in listing.text
        page = await http.get(f"/jobs/{T1}/{jobs['failed']}")
        assert page.status_code == 200
        assert "<script>window.__pwned" not in page.text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page.text
        assert "Traceback" in page.text
        # headers: CSP without inline script, no framing, no sniffing
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        css = await http.get("/static/dashboard.css")
        assert css.status_code == 200
        assert "text/css" in css.headers["content-type"]
        api = await http.get("/api/metrics")
        assert api.json()["by_status"]["failed"] == 2
        detail = await http.get(f"/api/jobs/{T1}/{jobs['failed']}")
        assert detail.json()["data"] == {"text": XSS}


async def test_tenant_restricted_view_never_shows_another_tenant(
    runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]
) -> None:
    async with client(create_app(runner, tenant=T1)) as http:
        listing = await http.get("/jobs", params={"tenant": str(T2)})  # ignored when restricted
        assert str(jobs["other"]) not in listing.text
        assert str(jobs["failed"]) in listing.text
        assert (await http.get(f"/jobs/{T2}/{jobs['other']}")).status_code == 404
        assert (await http.get(f"/jobs/{T1}/{jobs['other']}")).status_code == 404
        assert (await http.get(f"/api/jobs/{T2}/{jobs['other']}")).status_code == 404
        metrics = (await http.get("/api/metrics")).json()
        assert metrics["total"] == 3
        assert all(j["tenant"] == str(T1) for j in metrics["recent"])
        api = (await http.get("/api/jobs", params={"q": "tenant two"})).json()
        assert api["jobs"] == []
        # an action on another tenant's job is "not found", not performed
        page = await http.get(f"/jobs/{T1}/{jobs['failed']}")
        token = csrf_of(page.text)
        response = await http.post(f"/jobs/{T2}/{jobs['other']}/retry", data={"csrf_token": token})
        assert response.status_code == 404
    info = await runner.get_job_status(jobs["other"], tenant=T2)
    assert info is not None
    assert info.status is JobStatus.FAILED


async def test_tenant_resolver_per_request(
    runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]
) -> None:
    def resolve(request: Request, principal: Any) -> Any:
        return {"admin": ALL_TENANTS, "t2": T2}.get(request.headers.get("x-user", ""))

    async with client(create_app(runner, tenant=resolve)) as http:
        admin = (await http.get("/api/metrics", headers={"x-user": "admin"})).json()
        assert admin["total"] == 4
        two = (await http.get("/api/metrics", headers={"x-user": "t2"})).json()
        assert two["total"] == 1
        assert (await http.get("/api/metrics")).status_code == 403


async def test_csrf_and_actions(runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]) -> None:
    app = create_app(runner)
    async with client(app) as http:
        page = await http.get(f"/jobs/{T1}/{jobs['failed']}")
        token = csrf_of(page.text)
        target = f"/jobs/{T1}/{jobs['failed']}/retry"
        assert (await http.post(target)).status_code == 403
        assert (await http.post(target, data={"csrf_token": "0" * 64})).status_code == 403
        # a token for another cookie does not pass
        async with client(app) as other:
            other_token = csrf_of((await other.get(f"/jobs/{T1}/{jobs['failed']}")).text)
        assert (await http.post(target, data={"csrf_token": other_token})).status_code == 403
        cross = await http.post(
            target, data={"csrf_token": token}, headers={"sec-fetch-site": "cross-site"}
        )
        assert cross.status_code == 403
        info = await runner.get_job_status(jobs["failed"], tenant=T1)
        assert info is not None
        assert info.status is JobStatus.FAILED
        done = await http.post(target, data={"csrf_token": token})
        assert done.status_code == 303
        assert done.headers["location"].endswith("notice=retried")
        info = await runner.get_job_status(jobs["failed"], tenant=T1)
        assert info is not None
        assert info.status is JobStatus.QUEUED
        cancel = await http.post(f"/jobs/{T1}/{jobs['queued']}/cancel", data={"csrf_token": token})
        assert cancel.status_code == 303
        info = await runner.get_job_status(jobs["queued"], tenant=T1)
        assert info is not None
        assert info.status is JobStatus.CANCELLED
        assert info.metadata.get("cancel_reason") == "cancelled from the dashboard"


async def test_read_only(runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]) -> None:
    async with client(create_app(runner, read_only=True)) as http:
        page = await http.get(f"/jobs/{T1}/{jobs['failed']}")
        assert page.status_code == 200
        assert "retry-button" not in page.text
        assert "csrf_token" not in page.text
        assert 'href="/history"' not in page.text
        posted = await http.post(f"/jobs/{T1}/{jobs['failed']}/retry", data={"csrf_token": "x"})
        assert posted.status_code == 403
        cleared = await http.post("/history/clear", data={"scope": "all"})
        assert cleared.status_code == 403
    info = await runner.get_job_status(jobs["failed"], tenant=T1)
    assert info is not None
    assert info.status is JobStatus.FAILED


async def test_auth_hook(runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]) -> None:
    async def auth(request: Request) -> str | None:
        key = request.headers.get("authorization")
        if key == "Bearer nope":
            raise PermissionError("not an operator")
        return "alice" if key == "Bearer good" else None

    async with client(create_app(runner, auth=auth)) as http:
        assert (await http.get("/")).status_code == 401
        assert (await http.get("/api/metrics")).json() == {"error": "authentication required"}
        denied = await http.get("/jobs", headers={"authorization": "Bearer nope"})
        assert denied.status_code == 403
        assert (await http.get("/", headers={"authorization": "Bearer good"})).status_code == 200


async def test_history_clear_from_form(
    runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]
) -> None:
    async with client(create_app(runner, tenant=T1)) as http:
        page = await http.get("/history")
        token = csrf_of(page.text)
        bad = await http.post(
            "/history/clear",
            data={"csrf_token": token, "scope": "all", "older_than_days": "-3"},
        )
        assert bad.status_code == 400
        done = await http.post(
            "/history/clear",
            data={"csrf_token": token, "scope": "all", "older_than_days": "0"},
        )
        assert done.status_code == 303
        shown = await http.get(done.headers["location"])
        assert "Removed 2 jobs" in shown.text
    assert await runner.get_job_status(jobs["queued"], tenant=T1) is not None  # live: kept
    assert await runner.get_job_status(jobs["other"], tenant=T2) is not None  # other tenant


async def test_bad_filters_and_ids(runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]) -> None:
    async with client(create_app(runner)) as http:
        assert (await http.get("/jobs", params={"from": "yesterday"})).status_code == 400
        assert (await http.get("/jobs", params={"cursor": "@@"})).status_code == 400
        assert (await http.get("/jobs", params={"status": "weird"})).status_code == 400
        assert (await http.get("/jobs", params={"tenant": "x"})).status_code == 400
        assert (await http.get(f"/jobs/{T1}/not-a-uuid")).status_code == 404
        assert (await http.get(f"/jobs/nope/{jobs['ok']}")).status_code == 404
        assert (await http.get(f"/jobs/{T1}/{uuid.uuid4()}")).status_code == 404
        # pagination links carry the filters
        first = await http.get("/jobs", params={"limit": "25", "name": "boom"})
        assert first.status_code == 200


async def test_mounted_under_a_path(runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]) -> None:
    host = Starlette(routes=[Mount("/admin/jobs", app=create_app(runner))])
    async with client(host) as http:
        page = await http.get("/admin/jobs/")
        assert page.status_code == 200
        assert 'href="/admin/jobs/static/dashboard.css"' in page.text
        assert f'href="/admin/jobs/jobs/{T1}/{jobs["ok"]}"' in page.text
        assert (await http.get("/admin/jobs/static/dashboard.js")).status_code == 200
        assert (await http.get("/admin/jobs/api/metrics")).status_code == 200


async def test_jobs_of_the_other_backend_list_and_show_without_actions(
    runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]
) -> None:
    """A Temporal job's row in the shared tables: listed, filtered by runner type and shown by
    a dashboard on the PostgreSQL runner, which offers no cancel or retry for it (its runner
    must act) and refuses a forged action without changing the row."""
    from apps.helpers import fetch

    temporal_id = uuid.uuid4()
    await fetch(
        runner,
        "INSERT INTO {schema}.jobs (tenant, job_id, type, status, user_id, runner_type, "
        "external_id, created_at) VALUES (%s, %s, 'ok', 'processing', %s, 'temporal', %s, "
        "timezone('utc', now()))",
        T1,
        temporal_id,
        uuid.UUID(int=0),
        f"job-ok-{temporal_id}",
    )
    async with client(create_app(runner)) as http:
        listing = await http.get("/jobs", params={"runner_type": "temporal"})
        assert str(temporal_id) in listing.text
        assert str(jobs["ok"]) not in listing.text
        page = await http.get(f"/jobs/{T1}/{temporal_id}")
        assert page.status_code == 200
        assert 'id="other-backend"' in page.text
        assert f"job-ok-{temporal_id}" in page.text
        assert 'id="cancel-button"' not in page.text
        own = await http.get(f"/jobs/{T1}/{jobs['queued']}")
        assert 'id="cancel-button"' in own.text and 'id="other-backend"' not in own.text
        forged = await http.post(
            f"/jobs/{T1}/{temporal_id}/cancel", data={"csrf_token": csrf_of(own.text)}
        )
        assert forged.status_code == 303 and "cancel-refused" in forged.headers["location"]
    rows = await fetch(runner, "SELECT status FROM {schema}.jobs WHERE job_id = %s", temporal_id)
    assert rows == [{"status": "processing"}]


async def test_overview_shows_flow_control(runner: PostgresJobRunner) -> None:
    """Flow control is visible on the overview: off, then a rule set at run time with usage."""
    async with client(create_app(runner)) as http:
        page = await http.get("/")
        assert 'id="flow-control"' in page.text and "No limits" in page.text
        await runner.flow.set_concurrency_limit(tenant=T1, limit=4)
        page = await http.get("/")
        assert "0 / 4" in page.text and str(T1) in page.text
