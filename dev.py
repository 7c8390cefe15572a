#!/usr/bin/env python3
"""Run a nox session with nothing but Python installed: ``python3 dev.py demo|tests|...``.

Creates ``.venv-nox`` with nox on first use, then runs ``nox -s <session>``. The sessions'
virtualenvs are built with the interpreter that runs nox, i.e. the ``python3`` (3.11 or newer)
you started this script with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

MIN_PYTHON = (3, 11)
ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".venv-nox"


def _usable(python: Path) -> bool:
    """Whether ``.venv-nox``'s interpreter still runs and is new enough (it may predate an
    upgrade that removed the Python it was made with)."""
    if not python.exists():
        return False
    check = f"import sys; sys.exit(0 if sys.version_info >= {MIN_PYTHON!r} else 1)"
    try:
        return subprocess.run([str(python), "-c", check], check=False).returncode == 0
    except OSError:
        return False


def main() -> int:
    if sys.version_info < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        need = ".".join(map(str, MIN_PYTHON))
        print(
            f"dev.py: jobrunner needs Python {need} or newer; this is Python {found} "
            f"({sys.executable}). Run it with a newer interpreter, e.g. `python3.12 dev.py tests`.",
            file=sys.stderr,
        )
        return 2
    args = sys.argv[1:] or ["tests"]
    bindir = TOOLS / ("Scripts" if os.name == "nt" else "bin")
    nox = bindir / "nox"
    if not nox.exists() or not _usable(bindir / "python"):
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        subprocess.run(
            [str(bindir / "python"), "-m", "pip", "install", "-q", "nox>=2024.4"], check=True
        )
    session, extra = args[0], args[1:]
    cmd = [str(nox), "-f", str(ROOT / "noxfile.py"), "-s", session]
    if extra:
        cmd += ["--", *extra]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
