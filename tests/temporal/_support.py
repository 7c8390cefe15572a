"""Helpers of the Temporal tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_address() -> str:
    """An address where no Temporal answers (connection refused)."""
    return f"127.0.0.1:{free_port()}"
