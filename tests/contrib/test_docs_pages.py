"""docs/howto/django.md and fastapi.md show the example apps' code, which CI runs.

Every ``python`` block of those pages follows a link to its file: "[`path`](...):" for the
whole file, "From [`path`](...):" for a part of it. The file's own tests (the example apps'
in the ``examples`` nox session, the rest here and in tests/contrib) run that code, so the
pages cannot drift from code that works.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^(From )?\[`([^`]+)`\]\([^)]*\):\n\n```(\w*)\n(.*?)^```", re.M | re.S)


@pytest.mark.parametrize("page", ["django.md", "fastapi.md"])
def test_every_code_block_is_the_example_apps_code(page: str) -> None:
    text = (ROOT / "docs" / "howto" / page).read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert len(blocks) >= 5
    assert text.count("```python") == sum(1 for *_, lang, _ in blocks if lang == "python")
    for excerpt, path, _, code in blocks:
        source = (ROOT / path).read_text(encoding="utf-8")
        if excerpt:
            assert code in source, f"{page}: the block from {path} is not in that file"
        else:
            assert code == source, f"{page}: the block of {path} differs from the file"


def test_the_starlette_example_runs(jobrunner_dsn: str, schema: str) -> None:
    script = """
from fastapi.testclient import TestClient
import starlette_app

with TestClient(starlette_app.app) as client:
    done = client.post("/thumbnails", json={"image": "cat"}).json()
    assert done == {"status": "completed", "result": {"thumbnail": "cat.thumb.png"}}, done
    assert client.get("/ops/jobs/").status_code == 401
    assert client.get("/ops/jobs/", headers={"x-api-key": "wrong"}).status_code == 401
    page = client.get("/ops/jobs/jobs", headers={"x-api-key": "s3cret"})
    assert page.status_code == 200 and "make-thumbnail" in page.text
print("ok")
"""
    env = dict(
        os.environ,
        JOBRUNNER_DATABASE_URL=jobrunner_dsn,
        JOBRUNNER_SCHEMA=schema,
        JOB_RUNNER_TYPE="postgres",
        OPS_API_KEY="s3cret",
        PYTHONPATH=str(ROOT / "docs" / "examples"),
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")
