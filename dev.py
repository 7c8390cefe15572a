#!/usr/bin/env python3
"""Run a nox session with nothing but Python installed: ``python3 dev.py demo|tests|...``.

Creates ``.venv-nox`` with nox on first use, then runs ``nox -s <session>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".venv-nox"


def main() -> int:
    args = sys.argv[1:] or ["tests"]
    bindir = TOOLS / ("Scripts" if os.name == "nt" else "bin")
    nox = bindir / "nox"
    if not nox.exists():
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
