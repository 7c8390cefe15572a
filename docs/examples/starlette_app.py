"""A Starlette app using jobrunner: ``uvicorn starlette_app:app`` (docs/howto/fastapi.md).

Settings come from the environment (``JOBRUNNER_DATABASE_URL``, ...); ``OPS_API_KEY`` opens
the dashboard at ``/ops/jobs/`` to requests sending it in an ``X-Api-Key`` header.
"""

import os
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from jobrunner import JobContext, job
from jobrunner.contrib.asgi import dashboard_app, get_runner, jobrunner_lifespan


@job("make-thumbnail")
async def make_thumbnail(ctx: JobContext, data: dict) -> dict:
    return {"thumbnail": f"{data['image']}.thumb.png"}


async def create_thumbnail(request: Request) -> JSONResponse:
    runner = get_runner(request)
    body = await request.json()
    handle = await runner.schedule_job("make-thumbnail", {"image": str(body["image"])})
    info = await runner.wait_for_job(handle.job_id, timeout=10)
    return JSONResponse({"status": info.status.value, "result": info.result})


def operator(request: Request) -> str | None:
    """The app's own check, run on every dashboard request: None answers 401."""
    expected = os.environ.get("OPS_API_KEY", "")
    given = request.headers.get("x-api-key", "")
    return "ops" if expected and secrets.compare_digest(given, expected) else None


app = Starlette(
    routes=[
        Route("/thumbnails", create_thumbnail, methods=["POST"]),
        Mount("/ops/jobs", app=dashboard_app(auth=operator)),
    ],
    lifespan=jobrunner_lifespan(worker=True),
)
