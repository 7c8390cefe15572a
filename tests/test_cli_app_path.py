"""``jobrunner-worker --app myapp.jobs`` imports ``myapp`` from the current directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = """\
import sys
from jobrunner import job

@job("cli-app-path-probe")
async def probe(ctx, data):
    return None

print("IMPORTED myapp.jobs", flush=True)
sys.exit(7)  # stop before the worker needs a database
"""


def _worker_command() -> list[str]:
    """The installed console script, else an equivalent that, like a console script, does
    not put the working directory on ``sys.path`` (``-P``)."""
    script = Path(sys.executable).with_name("jobrunner-worker")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-P", "-c", "from jobrunner.cli import worker_main; worker_main()"]


def test_worker_imports_app_module_from_the_working_directory(tmp_path: Path) -> None:
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    env["JOBRUNNER_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    proc = subprocess.run(
        [*_worker_command(), "--app", "myapp.jobs", "--concurrency", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert "No module named 'myapp'" not in output, output
    assert "IMPORTED myapp.jobs" in proc.stdout, output
    assert proc.returncode == 7, output


def test_worker_reports_a_missing_app_module_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    proc = subprocess.run(
        [*_worker_command(), "--app", "nosuchapp.jobs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot import app module 'nosuchapp.jobs'" in proc.stderr
