"""jobrunner.contrib.asgi with FastAPI's TestClient and a plain Starlette app, on PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from jobrunner import InvalidArgumentError, JobRunnerFactory
from jobrunner._config import Settings
from jobrunner.contrib.asgi import dashboard_app, get_runner, jobrunner_lifespan, mount_dashboard

from .asgi_app import REGISTRY, STARTED_WITH, TENANT, build_app

ADMIN = {"x-user": "admin"}


@pytest.fixture
def settings(jobrunner_dsn: str, schema: str) -> Settings:
    return Settings(database_url=jobrunner_dsn, schema=schema, pool_max_size=4)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(build_app(settings, worker=True)) as client:
        yield client


def test_lifespan_opens_runner_runs_embedded_worker_and_closes(settings: Settings) -> None:
    app = build_app(settings, worker=True)
    STARTED_WITH.clear()
    previous = JobRunnerFactory._instance
    with TestClient(app) as client:
        runner = app.state.jobrunner
        assert JobRunnerFactory._instance is runner  # code calling get_instance() shares it
        assert STARTED_WITH == ["PostgresJobRunner"]  # the app's own lifespan ran inside
        job_id = client.post("/reports", json={"rows": 3}).json()["job_id"]
        # The embedded worker runs it: the endpoint waits for the final status.
        assert client.get(f"/reports/{job_id}").json() == {
            "status": "completed",
            "result": {"rows": 6},
        }
    assert not hasattr(app.state, "jobrunner")
    assert JobRunnerFactory._instance is previous
    assert runner.db._opened is False  # the pool was closed at shutdown


def test_without_worker_jobs_wait_in_the_queue(settings: Settings) -> None:
    app = build_app(settings, worker=False)
    with TestClient(app) as client:
        job_id = client.post("/reports", json={"rows": 1}).json()["job_id"]
        runner = app.state.jobrunner
        info = client.portal.call(lambda: runner.get_job_status(job_id, tenant=TENANT))
        assert info.status.value == "queued"


def test_dashboard_is_behind_the_apps_dependency(client: TestClient) -> None:
    assert client.get("/admin/jobs/").status_code == 401
    assert client.get("/admin/jobs/api/jobs").status_code == 401
    assert client.get("/admin/jobs/static/dashboard.css").status_code == 401
    assert client.get("/admin/jobs/", headers={"x-user": "bob"}).status_code == 403
    page = client.get("/admin/jobs/", headers=ADMIN)
    assert page.status_code == 200
    assert 'href="/admin/jobs/jobs"' in page.text  # links follow the mount path
    css = client.get("/admin/jobs/static/dashboard.css", headers=ADMIN)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    # Without the trailing slash: redirected into the dashboard.
    bare = client.get("/admin/jobs", headers=ADMIN, follow_redirects=False)
    assert bare.status_code in (301, 302, 307, 308)
    assert bare.headers["location"].endswith("/admin/jobs/")
    assert "/admin/jobs" not in client.get("/openapi.json").text


def test_dashboard_lists_and_cancels_through_the_router(client: TestClient) -> None:
    job_id = client.post("/reports", json={"rows": 2, "later": True}).json()["job_id"]
    listed = client.get("/admin/jobs/api/jobs", headers=ADMIN).json()
    assert job_id in [j["job_id"] for j in listed["jobs"]]

    page = client.get(f"/admin/jobs/jobs/{TENANT}/{job_id}", headers=ADMIN)
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    assert client.cookies.get("jobrunner_csrf")

    forged = client.post(
        f"/admin/jobs/jobs/{TENANT}/{job_id}/cancel",
        data={"csrf_token": "forged"},
        headers=ADMIN,
        follow_redirects=False,
    )
    assert forged.status_code == 403
    done = client.post(
        f"/admin/jobs/jobs/{TENANT}/{job_id}/cancel",
        data={"csrf_token": token[1]},
        headers=ADMIN,
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/admin/jobs/jobs/{TENANT}/{job_id}")
    shown = client.get(f"/admin/jobs/api/jobs/{TENANT}/{job_id}", headers=ADMIN).json()
    assert shown["status"] == "cancelled"


def test_dashboard_scope_and_read_only_come_from_the_principal(client: TestClient) -> None:
    job_id = client.post("/reports", json={"rows": 2, "later": True}).json()["job_id"]
    viewer = {"x-user": "admin-viewer"}  # restricted to TENANT and read-only
    page = client.get(f"/admin/jobs/jobs/{TENANT}/{job_id}", headers=viewer)
    assert page.status_code == 200
    assert "/cancel" not in page.text
    other = uuid.uuid4()
    assert client.get(f"/admin/jobs/jobs/{other}/{job_id}", headers=viewer).status_code == 404
    refused = client.post(
        f"/admin/jobs/jobs/{TENANT}/{job_id}/cancel",
        data={"csrf_token": "x"},
        headers=viewer,
        follow_redirects=False,
    )
    assert refused.status_code == 403


def _starlette_app(settings: Settings) -> Starlette:
    async def enqueue(request: Request) -> JSONResponse:
        runner = get_runner(request)
        handle = await runner.schedule_job("asgi-build-report", {"rows": 5}, tenant=TENANT)
        info = await runner.wait_for_job(handle.job_id, tenant=TENANT, timeout=20)
        return JSONResponse({"status": info.status.value, "result": info.result})

    def staff(request: Request) -> Any:
        return request.headers.get("x-user") == "admin" or None

    return Starlette(
        routes=[
            Route("/enqueue", enqueue, methods=["POST"]),
            Mount("/jobs", app=dashboard_app(auth=staff)),
        ],
        lifespan=jobrunner_lifespan(settings=settings, registry=REGISTRY, worker=True),
    )


def test_starlette_app_with_lifespan_accessor_and_mounted_dashboard(settings: Settings) -> None:
    app = _starlette_app(settings)
    with TestClient(app) as client:
        assert client.post("/enqueue").json() == {"status": "completed", "result": {"rows": 10}}
        assert client.get("/jobs/").status_code == 401
        page = client.get("/jobs/jobs", headers=ADMIN)
        assert page.status_code == 200
        assert "asgi-build-report" in page.text
    # A second start of the same app opens a new runner; the dashboard follows it.
    with TestClient(app) as client:
        assert client.get("/jobs/api/metrics", headers=ADMIN).status_code == 200


def test_mount_dashboard_on_starlette(settings: Settings) -> None:
    app = Starlette(lifespan=jobrunner_lifespan(settings=settings, registry=REGISTRY))
    mount_dashboard(app, "/ops/jobs", auth=lambda request: "admin")
    with TestClient(app) as client:
        assert 'href="/ops/jobs/jobs"' in client.get("/ops/jobs/").text


def test_host_check_is_the_host_apps_behind_auth_and_localhost_without(
    settings: Settings,
) -> None:
    rebinding = {"host": "attacker.example"}  # not the server's address
    with TestClient(build_app(settings)) as client:
        # Behind the app's own auth, the dashboard answers the hosts the app answers.
        assert client.get("/admin/jobs/", headers={**ADMIN, **rebinding}).status_code == 200
    for open_app in (Starlette, FastAPI):
        app = open_app(lifespan=jobrunner_lifespan(settings=settings, registry=REGISTRY))
        mount_dashboard(app, "/jobs", auth=None)
        with TestClient(app) as client:
            # Unguarded, it keeps the dashboard's DNS-rebinding defence.
            assert client.get("/jobs/", headers=rebinding).status_code == 400
            assert client.get("/jobs/").status_code == 200


def test_get_runner_without_the_lifespan_is_a_clear_error() -> None:
    async def view(request: Request) -> JSONResponse:
        get_runner(request)
        return JSONResponse({})

    app = Starlette(routes=[Route("/", view)])
    with (
        TestClient(app, raise_server_exceptions=True) as client,
        pytest.raises(Exception, match="jobrunner_lifespan"),
    ):
        client.get("/")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker": "yes"}, "worker must be"),
        ({"settings": {"schema": "x"}}, "settings must be"),
        ({"runner": object()}, "runner must be"),
        ({"then": 3}, "then must be"),
        ({"queues": "default"}, "queues must be"),
    ],
)
def test_lifespan_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        jobrunner_lifespan(**kwargs)


def test_dashboard_helpers_reject_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="path must start"):
        mount_dashboard(Starlette(), "admin/jobs", auth=None)
    with pytest.raises(InvalidArgumentError, match="refresh_seconds"):
        dashboard_app(auth=None, refresh_seconds=0)
    with pytest.raises(InvalidArgumentError, match="auth must be"):
        dashboard_app(auth="admin")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="allowed_hosts"):
        dashboard_app(auth=None, allowed_hosts=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="allowed host"):
        dashboard_app(auth=None, allowed_hosts=["bad host/"])
