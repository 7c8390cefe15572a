"""The app: ``uvicorn reports_app.main:app`` (settings from JOBRUNNER_* variables)."""

import contextlib
import os
import secrets
import uuid
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from jobrunner import JobRunner
from jobrunner.contrib.asgi import get_runner, jobrunner_lifespan, mount_dashboard
from pydantic import BaseModel, Field

from reports_app import jobs  # noqa: F401 - registers the handlers

Runner = Annotated[JobRunner, Depends(get_runner)]
basic_auth = HTTPBasic()


class ReportRequest(BaseModel):
    size: int = Field(ge=1, le=1_000_000)


def require_admin(credentials: Annotated[HTTPBasicCredentials, Depends(basic_auth)]) -> str:
    """The app's own authentication, which also guards the dashboard."""
    password = os.environ.get("REPORTS_ADMIN_PASSWORD", "")
    valid = (
        password != ""
        and secrets.compare_digest(credentials.username.encode(), b"admin")
        and secrets.compare_digest(credentials.password.encode(), password.encode())
    )
    if not valid:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Basic"})
    return credentials.username


def create_app() -> FastAPI:
    # The runner opens at start-up and closes at shutdown; a worker runs in the same
    # process unless REPORTS_EMBEDDED_WORKER=0 (then run `jobrunner-worker --app
    # reports_app.jobs` next to it).
    embedded = os.environ.get("REPORTS_EMBEDDED_WORKER", "1") == "1"
    app = FastAPI(title="reports", lifespan=jobrunner_lifespan(worker=embedded))

    @app.post("/reports", status_code=status.HTTP_202_ACCEPTED)
    async def request_report(report: ReportRequest, runner: Runner) -> dict:
        handle = await runner.schedule_job("build-report", {"size": report.size})
        return {"job_id": str(handle.job_id)}

    @app.get("/reports/{job_id}")
    async def report_status(job_id: uuid.UUID, runner: Runner, wait: float = 0) -> dict:
        """The job's state; ``?wait=S`` waits up to S seconds (at most 30) for it to end."""
        info = await runner.get_job_status(job_id)
        if info is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
        if wait > 0 and not info.status.is_final:
            with contextlib.suppress(TimeoutError):  # still running: say where it is
                info = await runner.wait_for_job(job_id, timeout=min(wait, 30))
        return {"status": info.status.value, "progress": info.progress, "result": info.result}

    mount_dashboard(app, "/admin/jobs", auth=require_admin)
    return app


app = create_app()
