"""A FastAPI app using jobrunner.contrib.asgi: tests start it with TestClient and uvicorn.

``uvicorn contrib.asgi_app:app`` (from tests/) builds it from the environment
(``JOBRUNNER_DATABASE_URL``, ``JOBRUNNER_SCHEMA``); ``ASGI_APP_WORKER=1`` embeds a worker.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

from jobrunner import ALL_TENANTS, JobContext, JobHandlerRegistry, JobRunner, job
from jobrunner._config import Settings
from jobrunner.contrib.asgi import get_runner, jobrunner_lifespan, mount_dashboard

TENANT = uuid.UUID("6d0c51f4-93a1-4a57-8a8e-3f1f9e2a7c11")
REGISTRY = JobHandlerRegistry()
STARTED_WITH: list[str] = []  # what the app's own lifespan saw at start-up


@job("asgi-build-report", registry=REGISTRY)
async def build_report(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    await ctx.set_progress(50, "counting")
    return {"rows": data["rows"] * 2}


class ReportIn(BaseModel):
    rows: int
    later: bool = False


def current_user(x_user: Annotated[str | None, Header()] = None) -> str:
    """The host app's authentication: a header stands in for a session."""
    if x_user is None:
        raise HTTPException(401, "log in first")
    if not x_user.startswith("admin"):
        raise HTTPException(403, "admins only")
    return x_user


def build_app(settings: Settings | None = None, *, worker: bool = False) -> FastAPI:
    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        STARTED_WITH.append(type(app.state.jobrunner).__name__)
        yield {"greeting": "hello"}

    app = FastAPI(
        lifespan=jobrunner_lifespan(
            settings=settings,
            registry=REGISTRY,
            worker=worker,
            concurrency=2,
            grace=5,
            then=own_lifespan,
        )
    )

    @app.post("/reports")
    async def create_report(
        report: ReportIn, runner: Annotated[JobRunner, Depends(get_runner)]
    ) -> dict[str, str]:
        if report.later:
            run_at = datetime.now(UTC) + timedelta(hours=1)
            handle = await runner.schedule_job_at(
                "asgi-build-report", {"rows": report.rows}, run_at, tenant=TENANT
            )
        else:
            handle = await runner.schedule_job(
                "asgi-build-report", {"rows": report.rows}, tenant=TENANT
            )
        return {"job_id": str(handle.job_id)}

    @app.get("/reports/{job_id}")
    async def report(
        job_id: uuid.UUID, runner: Annotated[JobRunner, Depends(get_runner)]
    ) -> dict[str, Any]:
        info = await runner.wait_for_job(job_id, tenant=TENANT, timeout=20)
        return {"status": info.status.value, "result": info.result}

    mount_dashboard(
        app,
        "/admin/jobs",
        auth=current_user,
        tenant=lambda request, user: ALL_TENANTS if user == "admin" else TENANT,
        read_only=lambda request, user: user == "admin-viewer",
    )
    return app


if os.environ.get("ASGI_APP_WORKER") == "1":  # under uvicorn: show jobrunner's log lines too
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
app = build_app(worker=os.environ.get("ASGI_APP_WORKER") == "1")
