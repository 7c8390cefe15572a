"""The FastAPI app under uvicorn, a real server: start-up, HTTP, graceful shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

TESTS = Path(__file__).resolve().parent.parent


def test_fastapi_app_under_uvicorn_runs_jobs_and_shuts_down_cleanly(
    jobrunner_dsn: str, schema: str
) -> None:
    # The test binds the port and hands the listening socket to uvicorn (--fd): requests
    # wait in the backlog until the app has started, so nothing polls for readiness.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = dict(
        os.environ,
        JOBRUNNER_DATABASE_URL=jobrunner_dsn,
        JOBRUNNER_SCHEMA=schema,
        JOB_RUNNER_TYPE="postgres",
        ASGI_APP_WORKER="1",
    )
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "contrib.asgi_app:app"),
            *("--app-dir", str(TESTS), "--fd", str(listener.fileno())),
        ],
        env=env,
        pass_fds=(listener.fileno(),),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    listener.close()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            job_id = client.post("/reports", json={"rows": 21}).json()["job_id"]
            assert client.get(f"/reports/{job_id}").json() == {
                "status": "completed",
                "result": {"rows": 42},
            }
            assert client.get("/admin/jobs/").status_code == 401
            page = client.get(f"/admin/jobs/jobs?q={job_id}", headers={"x-user": "admin"})
            assert page.status_code == 200
            assert job_id in page.text
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    # uvicorn re-raises the signal it stopped for once shut down (or exits 0, older ones).
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "embedded jobrunner worker started" in output
    assert "embedded jobrunner worker stopped" in output
    assert "Application shutdown complete" in output
    assert output.index("embedded jobrunner worker stopped") < output.index(
        "Application shutdown complete"
    )
