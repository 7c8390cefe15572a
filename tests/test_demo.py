"""The README's first command runs this demo; it must work with no database configured."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_on_a_private_postgres_with_no_configuration() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"JOBRUNNER_DATABASE_URL", "DATABASE_URL", "JOB_RUNNER_TYPE"}
    }
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner.demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "started a private PostgreSQL" in out
    assert "all jobs behaved as expected" in out
    assert "attempts=2/3" in out  # the flaky job was retried once
    assert "cancelled (slow-report)      cancelled" in out
