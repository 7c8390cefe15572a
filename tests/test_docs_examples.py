"""Runnable examples in docs/ must run."""

from __future__ import annotations

import os
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
