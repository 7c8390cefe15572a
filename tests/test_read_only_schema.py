"""Read-only tools never create or migrate a schema (issue 13).

``jobrunner jobs list --schema typo`` used to create ``typo``. Every CLI command but ``migrate``
and ``worker``, and the CLI's dashboard, open the database with ``auto_migrate="check"``: a
missing or outdated schema is a ``ConfigurationError`` (exit code 2, one line naming the
schema and ``jobrunner migrate``), and the database is left as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobrunner import ConfigurationError, InvalidArgumentError
from jobrunner._config import Settings
from jobrunner._db._database import Database
from jobrunner._db._migrate import available_migrations, current_version
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main

JOB = "11111111-2222-3333-4444-555555555555"

#: Every command that must not migrate, with the arguments it needs besides --schema.
READ_COMMANDS = [
    ["metrics"],
    ["metrics", "--all-tenants"],
    ["jobs", "list"],
    ["jobs", "list", "--all-tenants", "--json"],
    ["jobs", "show", JOB],
    ["jobs", "cancel", JOB],
    ["jobs", "retry", JOB],
    ["history", "clear", "--yes"],
    ["schedules", "list"],
    ["schedules", "pause", JOB],
    ["schedules", "resume", JOB],
    ["schedules", "cancel", JOB],
]


def _schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    return bool(row and row[0])


@pytest.fixture
def typo_schema(jobrunner_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A schema name nobody created; dropped afterwards in case a command did create it."""
    name = f"typo_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", jobrunner_dsn)
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    monkeypatch.delenv("JOBRUNNER_SCHEMA", raising=False)
    monkeypatch.delenv("JOBRUNNER_AUTO_MIGRATE", raising=False)
    try:
        yield name
    finally:
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c))
def test_read_commands_refuse_a_missing_schema_and_create_nothing(
    command: list[str],
    typo_schema: str,
    jobrunner_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([*command, "--schema", typo_schema])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0, err  # one line, no traceback
    assert f"schema '{typo_schema}' does not exist" in err
    assert "jobrunner migrate" in err
    assert not _schema_exists(jobrunner_dsn, typo_schema)


def test_read_commands_refuse_a_schema_behind_and_leave_it_behind(
    typo_schema: str, jobrunner_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = available_migrations()[0]
    asyncio.run(Database(jobrunner_dsn, schema=typo_schema).migrate(target=first.version))
    for command in (["jobs", "list"], ["metrics"], ["schedules", "list"]):
        assert main([*command, "--schema", typo_schema]) == 2
        err = capsys.readouterr().err.strip()
        assert "is not at the current migration" in err and "jobrunner migrate" in err
        assert f"{available_migrations()[-1].version:04d}" in err

    async def version() -> int:
        async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
            return await current_version(conn, typo_schema)

    assert asyncio.run(version()) == first.version


def test_migrate_still_creates_the_schema_and_then_reads_work(
    typo_schema: str, jobrunner_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--schema", typo_schema]) == 0
    assert _schema_exists(jobrunner_dsn, typo_schema)
    capsys.readouterr()
    assert main(["jobs", "list", "--schema", typo_schema]) == 0
    assert "no jobs match" in capsys.readouterr().out


def test_dashboard_command_refuses_a_missing_schema_before_serving(
    typo_schema: str,
    jobrunner_dsn: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    assert main(["dashboard", "--schema", typo_schema]) == 2
    err = capsys.readouterr().err.strip()
    assert f"schema '{typo_schema}' does not exist" in err
    assert served == []
    assert not _schema_exists(jobrunner_dsn, typo_schema)


async def test_dashboard_command_runner_checks_instead_of_migrating(
    typo_schema: str, jobrunner_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner the served app builds on its first request does not migrate either (the
    schema can disappear after the start-up check)."""
    uvicorn = pytest.importorskip("uvicorn")
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    await Database(jobrunner_dsn, schema=typo_schema).migrate()
    assert await asyncio.to_thread(main, ["dashboard", "--schema", typo_schema]) == 0
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(typo_schema)))
    dashboard = served[0].state.dashboard
    with pytest.raises(ConfigurationError, match="does not exist"):
        await dashboard.runner()
    assert not _schema_exists(jobrunner_dsn, typo_schema)


async def test_runner_check_mode(typo_schema: str, jobrunner_dsn: str) -> None:
    runner = PostgresJobRunner(jobrunner_dsn, schema=typo_schema, auto_migrate="check")
    with pytest.raises(ConfigurationError, match="does not exist; run `jobrunner migrate"):
        await runner.start(timeout=5)
    assert not _schema_exists(jobrunner_dsn, typo_schema)
    await Database(jobrunner_dsn, schema=typo_schema).migrate()
    async with PostgresJobRunner(
        jobrunner_dsn, schema=typo_schema, auto_migrate="check", require_registered=False
    ) as ready:
        assert (await ready.list_jobs()).jobs == []


def test_auto_migrate_values() -> None:
    assert Settings.from_env({"JOBRUNNER_AUTO_MIGRATE": "check"}).auto_migrate == "check"
    assert Settings.from_env({"JOBRUNNER_AUTO_MIGRATE": "CHECK"}).auto_migrate == "check"
    with pytest.raises(ConfigurationError, match="true, false or check"):
        Settings.from_env({"JOBRUNNER_AUTO_MIGRATE": "sometimes"})
    with pytest.raises(InvalidArgumentError, match="auto_migrate"):
        PostgresJobRunner("postgresql://x/y", auto_migrate="yes")  # type: ignore[arg-type]


def test_check_passes_for_a_non_owner_role_under_row_level_security(
    typo_schema: str, jobrunner_dsn: str
) -> None:
    """RLS hides every schema_migrations row from other roles than the owner: the check then
    accepts the table's presence instead of calling the schema empty."""
    assert main(["migrate", "--rls", "--schema", typo_schema]) == 0
    role = f"jr_ro_{uuid.uuid4().hex[:10]}"
    ident = sql.Identifier(role)
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(typo_schema), ident)
        )
        conn.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(typo_schema), ident
            )
        )
    try:
        params = psycopg.conninfo.conninfo_to_dict(jobrunner_dsn)
        params["user"] = role
        as_role = psycopg.conninfo.make_conninfo(**params)
        asyncio.run(Database(as_role, schema=typo_schema).check_migrated())
        with pytest.raises(ConfigurationError, match="does not exist"):
            asyncio.run(Database(as_role, schema=typo_schema + "_no").check_migrated())
    finally:
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
