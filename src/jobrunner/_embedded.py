"""A private PostgreSQL for demos and tests when none is configured.

Tries the system's PostgreSQL binaries (``initdb``/``pg_ctl``; as root, run as the ``postgres``
user because initdb refuses root), then the ``pgserver`` package (extra ``embedded``).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from jobrunner._errors import UnavailableError

logger = logging.getLogger("jobrunner.embedded")


def find_pg_bindir() -> Path | None:
    """Directory holding ``initdb`` and ``pg_ctl``, newest version first."""
    env = os.environ.get("JOBRUNNER_PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/usr/local/pgsql*/bin"), reverse=True)
    candidates += sorted(glob.glob("/opt/homebrew/opt/postgresql*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """Start and stop a throwaway PostgreSQL cluster.

    Example:
        >>> with EmbeddedPostgres() as pg:
        ...     print(pg.dsn)
    """

    def __init__(self, base_dir: str | Path | None = None) -> None:
        self._base = Path(base_dir) if base_dir else None
        self._tmp: str | None = None
        self._datadir: Path | None = None
        self._bindir: Path | None = None
        self._run_as: str | None = None
        self._pgserver: object | None = None
        self.dsn: str = ""

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def start(self) -> str:
        """Start the cluster and return its DSN."""
        bindir = find_pg_bindir()
        if bindir is not None:
            try:
                return self._start_system(bindir)
            except (OSError, subprocess.CalledProcessError) as exc:
                logger.warning("system PostgreSQL failed to start (%s); trying pgserver", exc)
        return self._start_pgserver()

    def _start_system(self, bindir: Path) -> str:
        self._bindir = bindir
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise UnavailableError("running as root needs a 'postgres' user") from exc
            self._run_as = "postgres"
        self._tmp = tempfile.mkdtemp(prefix="jobrunner-pg-", dir=self._base)
        root = Path(self._tmp)
        data = root / "data"
        if self._run_as:
            shutil.chown(root, user=self._run_as)
        os.chmod(root, 0o755)
        port = free_port()
        subprocess.run(
            self._cmd(
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            self._cmd(
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-w",
                "-o",
                f"-p {port} -h 127.0.0.1 -k {root} -c fsync=on",
                "start",
            ),
            check=True,
            capture_output=True,
        )
        self._datadir = data
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        logger.info("started private PostgreSQL at 127.0.0.1:%d (%s)", port, data)
        return self.dsn

    def _start_pgserver(self) -> str:
        try:
            import pgserver
        except ImportError as exc:
            raise UnavailableError(
                "no PostgreSQL available: install PostgreSQL (initdb/pg_ctl) or "
                "pip install 'jobrunner[embedded]' (pgserver), or set JOBRUNNER_DATABASE_URL"
            ) from exc
        self._tmp = tempfile.mkdtemp(prefix="jobrunner-pgserver-", dir=self._base)
        server = getattr(pgserver, "get_server")(self._tmp, cleanup_mode="stop")  # noqa: B009
        self._pgserver = server
        self.dsn = str(server.get_uri())
        return self.dsn

    def restart(self) -> None:
        """Stop and start the server again on the same port (fault-injection tests)."""
        if self._bindir is None or self._datadir is None:
            raise UnavailableError("restart is supported for system-binary clusters only")
        subprocess.run(
            # -l: without a log file the new postmaster keeps our captured pipes open and
            # subprocess.run never returns.
            self._cmd(
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self._datadir),
                "-w",
                "-m",
                "fast",
                "-l",
                str(self._datadir.parent / "log"),
                "restart",
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self._bindir is not None and self._datadir is not None:
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                subprocess.run(
                    self._cmd(
                        str(self._bindir / "pg_ctl"),
                        "-D",
                        str(self._datadir),
                        "-w",
                        "-m",
                        "immediate",
                        "stop",
                    ),
                    check=True,
                    capture_output=True,
                )
            self._datadir = None
        if self._pgserver is not None:
            with contextlib.suppress(Exception):
                self._pgserver.cleanup()  # type: ignore[attr-defined]
            self._pgserver = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
