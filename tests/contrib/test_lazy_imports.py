"""The integrations load nothing until used: ``import jobrunner`` stays framework-free."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    probe = (
        f"{code}\nimport sys\nprint(','.join(sorted({{m.split('.')[0] for m in sys.modules}})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.strip().split(","))


def test_importing_jobrunner_imports_no_web_framework() -> None:
    loaded = _loaded_after("import jobrunner, jobrunner.contrib, jobrunner.contrib.django")
    assert "jobrunner" in loaded
    assert not loaded & {"django", "starlette", "fastapi", "asgiref", "uvicorn"}


def test_the_asgi_integration_needs_starlette_only() -> None:
    loaded = _loaded_after("import jobrunner.contrib.asgi")
    assert "starlette" in loaded
    assert not loaded & {"django", "fastapi"}
