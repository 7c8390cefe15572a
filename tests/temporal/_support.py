"""Helpers of the Temporal tests."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_address() -> str:
    """An address where no Temporal answers (connection refused)."""
    return f"127.0.0.1:{free_port()}"


class CliWorker:
    """``jobrunner-worker --app temporal.worker_app`` (JOB_RUNNER_TYPE=temporal in ``env``) in
    a subprocess, its output captured to ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *extra: str) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from jobrunner.cli import worker_main; raise SystemExit(worker_main())",
                "--app",
                "temporal.worker_app",
                "--grace",
                "5",
                *extra,
            ],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait(self, timeout: float = 60) -> int:
        """The exit code; a worker that does not exit in time is killed and fails the test."""
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker did not exit; output:\n{self.output()}") from None

    async def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then :meth:`wait`."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
