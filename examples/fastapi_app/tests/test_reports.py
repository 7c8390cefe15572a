"""The service end to end: request a report, the embedded worker builds it."""

import uuid

from fastapi.testclient import TestClient

from tests.conftest import PASSWORD


def test_a_report_is_built_in_the_background(client: TestClient) -> None:
    accepted = client.post("/reports", json={"size": 4})
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]

    report = client.get(f"/reports/{job_id}", params={"wait": 20}).json()

    assert report == {"status": "completed", "progress": 100, "result": {"rows": 4, "total": 14}}


def test_bad_requests_are_refused(client: TestClient) -> None:
    assert client.post("/reports", json={"size": 0}).status_code == 422
    assert client.get(f"/reports/{uuid.uuid4()}").status_code == 404


def test_the_dashboard_is_behind_the_apps_login(client: TestClient) -> None:
    assert client.get("/admin/jobs/").status_code == 401
    assert client.get("/admin/jobs/", auth=("admin", "wrong")).status_code == 401
    page = client.get("/admin/jobs/", auth=("admin", PASSWORD))
    assert page.status_code == 200
    job_id = client.post("/reports", json={"size": 2}).json()["job_id"]
    listed = client.get("/admin/jobs/api/jobs", auth=("admin", PASSWORD)).json()
    assert job_id in [job["job_id"] for job in listed["jobs"]]
