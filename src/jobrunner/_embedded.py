"""A private PostgreSQL for demos and tests when none is configured.

In order:

1. the system's PostgreSQL binaries (``initdb``/``pg_ctl``);
2. the ``pgserver`` package (extra ``embedded``).

PostgreSQL refuses to run as root, so as root both run as an unprivileged user: ``postgres``
when it exists, else ``nobody``, owning a private data directory (no user is created). As root
the pgserver step uses the package's bundled binaries the same way instead of pgserver's own
start-up, which would ``useradd`` a user and widen permissions up the directory tree. When
nothing works, :class:`UnavailableError` lists every attempt and why it failed.
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


UNPRIVILEGED_USERS = ("postgres", "nobody")


def _is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def unprivileged_user() -> str:
    """The user a root process runs PostgreSQL as: ``postgres``, else ``nobody``."""
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise UnavailableError(
        "PostgreSQL refuses to run as root and there is no unprivileged user to run it as "
        f"(looked for {', '.join(repr(n) for n in UNPRIVILEGED_USERS)})"
    )


def pgserver_bindir(module: object) -> Path:
    """The directory of the PostgreSQL binaries bundled in the ``pgserver`` package."""
    folder = Path(str(getattr(module, "__file__", ""))).parent / "pginstall" / "bin"
    if not ((folder / "initdb").exists() and (folder / "pg_ctl").exists()):
        raise UnavailableError(f"pgserver's bundled initdb/pg_ctl not found in {folder}")
    return folder


def _describe(exc: BaseException) -> str:
    """One line for the error report; a failed command's name and stderr tail included."""
    if isinstance(exc, subprocess.CalledProcessError):
        out = exc.stderr or exc.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        tail = " ".join(text.split())[-400:]
        args = [exc.cmd] if isinstance(exc.cmd, str) else [str(a) for a in exc.cmd]
        tool = next((a for a in args if a.endswith(("initdb", "pg_ctl"))), args[0])
        return f"{Path(tool).name} exited with status {exc.returncode}" + (
            f": {tail}" if tail else ""
        )
    return str(exc) or type(exc).__name__


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
        """Start the cluster and return its DSN.

        Raises:
            UnavailableError: neither the system binaries nor pgserver could start a server;
                the message lists what was tried.
        """
        tried: list[str] = []
        bindir = find_pg_bindir()
        if bindir is None:
            tried.append(
                "system PostgreSQL: no initdb/pg_ctl found (JOBRUNNER_PG_BINDIR, "
                "/usr/lib/postgresql/*/bin, /usr/local/pgsql*/bin, "
                "/opt/homebrew/opt/postgresql*/bin, PATH)"
            )
        else:
            try:
                return self._start_system(bindir)
            except (UnavailableError, OSError, subprocess.CalledProcessError) as exc:
                tried.append(f"system PostgreSQL in {bindir}: {_describe(exc)}")
                logger.warning("system PostgreSQL failed to start (%s); trying pgserver", exc)
                self._discard()
        try:
            return self._start_pgserver()
        except Exception as exc:  # noqa: BLE001 - pgserver's failures have no common type
            tried.append(f"pgserver: {_describe(exc)}")
            self._discard()
        raise UnavailableError(
            "could not start a private PostgreSQL; tried:\n  - "
            + "\n  - ".join(tried)
            + "\nInstall PostgreSQL (initdb and pg_ctl), or pip install 'jobrunner-pg[embedded]' "
            "(pgserver), or set JOBRUNNER_DATABASE_URL to a server of yours."
        )

    def _discard(self) -> None:
        """Forget a failed attempt: stop a server it may have left running, delete its files."""
        if self._tmp:
            data = Path(self._tmp) / "data"
            if self._bindir is not None and (data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    subprocess.run(
                        self._cmd(
                            str(self._bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"
                        ),
                        check=False,
                        capture_output=True,
                        timeout=60,
                    )
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        self._bindir = None
        self._datadir = None
        self._run_as = None
        self._pgserver = None

    def _start_system(self, bindir: Path) -> str:
        self._bindir = bindir
        if _is_root():
            self._run_as = unprivileged_user()
        self._tmp = tempfile.mkdtemp(prefix="jobrunner-pg-", dir=self._base)
        root = Path(self._tmp)
        data = root / "data"
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chmod(root, 0o755)
        port = free_port()
        # cwd: the server's own directory, which the unprivileged user can always enter.
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
            cwd=root,
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
            cwd=root,
        )
        self._datadir = data
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        logger.info(
            "started private PostgreSQL at 127.0.0.1:%d (%s%s)",
            port,
            data,
            f", as user {self._run_as}" if self._run_as else "",
        )
        return self.dsn

    def _start_pgserver(self) -> str:
        try:
            import pgserver
        except ImportError as exc:
            raise UnavailableError("not installed (pip install 'jobrunner-pg[embedded]')") from exc
        if _is_root():
            # pgserver's own start-up would useradd a 'pgserver' user and chmod every parent
            # directory; run its bundled binaries as an unprivileged user ourselves instead.
            return self._start_system(pgserver_bindir(pgserver))
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
