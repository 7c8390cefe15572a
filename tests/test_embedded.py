"""The private PostgreSQL: system binaries, else pgserver, else a clear error; never as root."""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

import psycopg
import pytest

from jobrunner import _embedded
from jobrunner._embedded import EmbeddedPostgres
from jobrunner._errors import UnavailableError


def _no_pgserver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)  # import pgserver -> ImportError


def _server_user(dsn: str) -> tuple[str, str]:
    """(OS user owning the data directory, PostgreSQL version) of the running server."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('data_directory'), version()").fetchone()
    assert row is not None
    return pwd.getpwuid(Path(row[0]).stat().st_uid).pw_name, str(row[1])


def test_nothing_available_lists_every_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_embedded, "find_pg_bindir", lambda: None)
    _no_pgserver(monkeypatch)
    with pytest.raises(UnavailableError) as info:
        EmbeddedPostgres().start()
    message = str(info.value)
    assert "system PostgreSQL: no initdb/pg_ctl found" in message
    assert "pgserver: not installed (pip install 'jobrunner-pg[embedded]')" in message
    assert "JOBRUNNER_DATABASE_URL" in message


def test_root_without_an_unprivileged_user_falls_back_to_pgserver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The audit's bug: the 'no postgres user' error ended start() before pgserver was tried."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setattr(_embedded, "find_pg_bindir", lambda: bindir)
    monkeypatch.setattr(_embedded, "_is_root", lambda: True)
    monkeypatch.setattr(_embedded, "UNPRIVILEGED_USERS", ("no-such-user-jr",))
    calls: list[str] = []

    def fake_pgserver(self: EmbeddedPostgres) -> str:
        calls.append("pgserver")
        self.dsn = "postgresql://fake"
        return self.dsn

    monkeypatch.setattr(EmbeddedPostgres, "_start_pgserver", fake_pgserver)
    assert EmbeddedPostgres().start() == "postgresql://fake"
    assert calls == ["pgserver"]


def test_root_without_any_way_reports_both_failures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_embedded, "find_pg_bindir", lambda: tmp_path)
    monkeypatch.setattr(_embedded, "_is_root", lambda: True)
    monkeypatch.setattr(_embedded, "UNPRIVILEGED_USERS", ("no-such-user-jr",))
    _no_pgserver(monkeypatch)
    with pytest.raises(UnavailableError) as info:
        EmbeddedPostgres().start()
    message = str(info.value)
    assert f"system PostgreSQL in {tmp_path}: PostgreSQL refuses to run as root" in message
    assert "'no-such-user-jr'" in message
    assert "pgserver: not installed" in message


def test_a_failing_initdb_is_reported_with_its_stderr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("initdb", "pg_ctl"):
        script = bindir / tool
        script.write_text("#!/bin/sh\necho 'initdb: error: disk on fire' >&2\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setattr(_embedded, "find_pg_bindir", lambda: bindir)
    monkeypatch.setattr(_embedded, "_is_root", lambda: False)
    _no_pgserver(monkeypatch)
    with pytest.raises(UnavailableError) as info:
        EmbeddedPostgres(base_dir=tmp_path).start()
    assert "initdb exited with status 1: initdb: error: disk on fire" in str(info.value)
    assert list(tmp_path.glob("jobrunner-pg-*")) == []  # the failed attempt's files are gone


def test_as_root_pgserver_runs_its_bundled_binaries_unprivileged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No pgserver.get_server (it would useradd and chmod parents) when running as root."""
    import pgserver  # the embedded extra, part of the dev extra jobrunner's suite runs with

    monkeypatch.setattr(_embedded, "_is_root", lambda: True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pgserver.get_server must not run as root")

    monkeypatch.setattr(pgserver, "get_server", refuse)
    seen: list[Path] = []

    def fake_system(self: EmbeddedPostgres, bindir: Path) -> str:
        seen.append(bindir)
        return "postgresql://fake"

    monkeypatch.setattr(EmbeddedPostgres, "_start_system", fake_system)
    assert EmbeddedPostgres()._start_pgserver() == "postgresql://fake"
    assert seen == [Path(pgserver.__file__).parent / "pginstall" / "bin"]


def test_system_binaries_start_a_real_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root with only ``nobody`` to run as (no ``postgres`` user needed); else as you."""
    if _embedded.find_pg_bindir() is None:
        pytest.fail("this machine has no PostgreSQL binaries (initdb/pg_ctl)")
    monkeypatch.setattr(_embedded, "UNPRIVILEGED_USERS", ("nobody",))
    _no_pgserver(monkeypatch)
    with EmbeddedPostgres() as pg:
        owner, _ = _server_user(pg.dsn)
    expected = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert owner == expected


def test_pgserver_starts_a_real_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for a machine without PostgreSQL binaries (unprivileged when root)."""
    monkeypatch.setattr(_embedded, "find_pg_bindir", lambda: None)
    with EmbeddedPostgres() as pg:
        owner, version = _server_user(pg.dsn)
    assert version.startswith("PostgreSQL")
    if os.geteuid() == 0:
        assert owner in _embedded.UNPRIVILEGED_USERS
