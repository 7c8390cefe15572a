"""Runnable examples in docs/ must run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_quickstart_example_runs(jobrunner_dsn: str, schema: str) -> None:
    env = dict(
        os.environ,
        JOBRUNNER_DATABASE_URL=jobrunner_dsn,
        JOBRUNNER_SCHEMA=schema,
        JOB_RUNNER_TYPE="postgres",
    )
    proc = subprocess.run(
        [sys.executable, str(DOCS / "examples" / "quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed {'pdf': 'invoice-c-1.pdf'}" in proc.stdout
    with psycopg.connect(jobrunner_dsn) as conn:
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.jobs").format(sql.Identifier(schema))
        ).fetchone()
    assert count == (1,)


def test_observability_example_runs(jobrunner_dsn: str, schema: str) -> None:
    """docs/howto/observability.md's example: spans on the console, one trace, the result,
    the metrics."""
    env = dict(
        os.environ,
        JOBRUNNER_DATABASE_URL=jobrunner_dsn,
        JOBRUNNER_SCHEMA=schema,
        JOB_RUNNER_TYPE="postgres",
    )
    proc = subprocess.run(
        [sys.executable, str(DOCS / "examples" / "observability.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: {'pdf': 'invoice-42.pdf'}" in proc.stdout
    spans = [
        json.loads(block)
        for block in re.findall(r"^\{\n.*?^\}$", proc.stdout, flags=re.DOTALL | re.MULTILINE)
    ]
    names = {s["name"]: s for s in spans}
    assert set(names) == {
        "POST /invoices",
        "jobrunner.enqueue render-invoice",
        "jobrunner.run render-invoice",
        "jobrunner.step render-pdf",
    }
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    run = names["jobrunner.run render-invoice"]
    assert run["parent_id"] == names["jobrunner.enqueue render-invoice"]["context"]["span_id"]
    assert re.search(
        r'^jobrunner_jobs_completed_total\{name="render-invoice",queue="default",'
        r'runner_type="postgres"\} 1\.0$',
        proc.stdout,
        flags=re.MULTILINE,
    )
