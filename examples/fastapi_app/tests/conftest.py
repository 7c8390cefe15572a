"""A client of the app on a schema of its own, with the embedded worker running."""

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from reports_app.main import create_app

PASSWORD = "correct horse"


@pytest.fixture
def client(jobrunner_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    schema = f"reports_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", jobrunner_dsn)
    monkeypatch.setenv("JOBRUNNER_SCHEMA", schema)
    monkeypatch.setenv("REPORTS_ADMIN_PASSWORD", PASSWORD)
    try:
        with TestClient(create_app()) as client:  # runs the lifespan: runner and worker
            yield client
    finally:
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
