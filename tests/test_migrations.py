"""Versioned migrations: idempotent, safe concurrently, step-by-step equals all-at-once, and the
seed's tables and monitoring SQL work unchanged."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from jobrunner._db._database import Database
from jobrunner._db._migrate import available_migrations, current_version
from jobrunner.cli import main as cli_main
from jobrunner.testing import isolated_schema

# Verbatim from the seed design document (../shared/seed/job_scheduler.md, "Database Schema"
# and "Database Queries"), copied here so the test runs from a fresh clone.
SEED_DDL = """
CREATE TABLE jobs (
tenant UUID NOT NULL,
job_id UUID DEFAULT gen_random_uuid() NOT NULL,
type VARCHAR NOT NULL,
metadata JSONB,
status job_status NOT NULL, -- pending, processing, completed, failed, active, queued
created_at TIMESTAMP DEFAULT NOW(),
updated_at TIMESTAMP,
user_id UUID NOT NULL,
runner_type VARCHAR DEFAULT 'pgboss' NOT NULL, -- 'pgboss' or 'temporal'
external_id VARCHAR, -- PG Boss job ID or Temporal workflow ID
external_run_id VARCHAR, -- Temporal run ID
PRIMARY KEY (tenant, job_id)
);
CREATE TABLE job_details (
tenant UUID NOT NULL,
detail_id UUID DEFAULT gen_random_uuid() NOT NULL,
job_id UUID NOT NULL,
step_name VARCHAR NOT NULL,
status job_status NOT NULL,
result JSONB,
processed_at TIMESTAMP,
retry_count INTEGER DEFAULT 0,
metadata JSONB,
PRIMARY KEY (tenant, detail_id),
FOREIGN KEY (tenant, job_id) REFERENCES jobs(tenant, job_id)
);
"""

SEED_QUERIES = """
-- Get all jobs for a tenant
SELECT * FROM jobs WHERE tenant = 'tenant-id' ORDER BY created_at DESC;
-- Get job details/steps
SELECT * FROM job_details WHERE job_id = 'job-id' ORDER BY processed_at;
-- Find jobs by runner type
SELECT * FROM jobs WHERE runner_type = 'temporal';
-- Find job by Temporal workflow ID
SELECT * FROM jobs WHERE external_id = 'workflow-id';
"""

SEED_TYPES = {
    "UUID": ("uuid", "uuid"),
    "VARCHAR": ("character varying", "varchar"),
    "JSONB": ("jsonb", "jsonb"),
    "TIMESTAMP": ("timestamp without time zone", "timestamp"),
    "INTEGER": ("integer", "int4"),
    "job_status": ("USER-DEFINED", "job_status"),
}

VERSIONS = [m.version for m in available_migrations()]


async def catalogue(dsn: str, schema: str) -> dict[str, Any]:
    """Everything that makes up the schema, with the schema's name normalised away."""
    queries = {
        "columns": """
            SELECT table_name, column_name, ordinal_position, data_type, udt_name,
                   is_nullable, column_default, character_maximum_length, numeric_precision
            FROM information_schema.columns WHERE table_schema = %(s)s
            ORDER BY table_name, ordinal_position""",
        "indexes": """
            SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %(s)s
            ORDER BY tablename, indexname""",
        "constraints": """
            SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid) AS def
            FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
            JOIN pg_namespace n ON n.oid = rel.relnamespace WHERE n.nspname = %(s)s
            ORDER BY rel.relname, con.conname""",
        "enums": """
            SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
            FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
            JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %(s)s
            GROUP BY t.typname ORDER BY t.typname""",
        "relations": """
            SELECT c.relname, c.relkind, c.reloptions, c.relpersistence
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %(s)s ORDER BY c.relname""",
        "functions": """
            SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
                   pg_get_functiondef(p.oid) AS def
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = %(s)s AND p.prokind IN ('f', 'p') ORDER BY 1, 2""",
        "triggers": """
            SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) AS def
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %(s)s AND NOT t.tgisinternal ORDER BY 1, 2""",
        "views": """
            SELECT viewname, definition FROM pg_views WHERE schemaname = %(s)s ORDER BY 1""",
        "policies": """
            SELECT tablename, policyname, permissive, roles, cmd, qual, with_check
            FROM pg_policies WHERE schemaname = %(s)s ORDER BY 1, 2""",
        "migrations": """
            SELECT version, name FROM {schema}.schema_migrations ORDER BY version""",
    }
    pattern = re.compile(r'"?' + re.escape(schema) + r'"?')
    out: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, row_factory=dict_row
    ) as conn:
        for key, text in queries.items():
            query = (
                sql.SQL(text.replace("{schema}", "{s_ident}")).format(
                    s_ident=sql.Identifier(schema)
                )
                if "{schema}" in text
                else text
            )
            cur = await conn.execute(query, {"s": schema})
            rows = await cur.fetchall()
            out[key] = [
                {k: pattern.sub("<schema>", v) if isinstance(v, str) else v for k, v in r.items()}
                for r in rows
            ]
    return out


@pytest.fixture
async def fresh_schema(jobrunner_dsn: str) -> AsyncIterator[Callable[[], Any]]:
    """Extra isolated schemas, dropped afterwards."""
    stack: list[Any] = []

    async def make() -> str:
        cm = isolated_schema(jobrunner_dsn)
        name = await cm.__aenter__()
        stack.append(cm)
        return name

    yield make
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


async def test_versions_are_sequential_and_named() -> None:
    migrations = available_migrations()
    assert migrations[0].version == 1 and migrations[0].name == "core"
    assert sorted(set(VERSIONS)) == VERSIONS
    for m in migrations:
        assert m.text.strip(), m.name


async def test_step_by_step_equals_all_at_once(
    jobrunner_dsn: str, fresh_schema: Callable[[], Any]
) -> None:
    all_at_once, stepwise = await fresh_schema(), await fresh_schema()
    db_all = Database(jobrunner_dsn, schema=all_at_once)
    assert await db_all.migrate() == VERSIONS
    db_step = Database(jobrunner_dsn, schema=stepwise)
    for version in VERSIONS:
        assert await db_step.migrate(target=version) == [version]
        async with await psycopg.AsyncConnection.connect(jobrunner_dsn) as conn:
            assert await current_version(conn, stepwise) == version  # type: ignore[arg-type]
    assert await db_step.migrate() == []
    reference = await catalogue(jobrunner_dsn, all_at_once)
    assert reference["columns"] and reference["indexes"] and reference["constraints"]
    assert await catalogue(jobrunner_dsn, stepwise) == reference


async def test_migrate_is_idempotent(jobrunner_dsn: str, fresh_schema: Callable[[], Any]) -> None:
    schema = await fresh_schema()
    db = Database(jobrunner_dsn, schema=schema)
    assert await db.migrate() == VERSIONS
    before = await catalogue(jobrunner_dsn, schema)
    assert await db.migrate() == []
    assert await db.migrate(target=1) == []
    assert await catalogue(jobrunner_dsn, schema) == before


async def test_concurrent_migrations_are_safe(
    jobrunner_dsn: str, fresh_schema: Callable[[], Any]
) -> None:
    reference_schema, schema = await fresh_schema(), await fresh_schema()
    await Database(jobrunner_dsn, schema=reference_schema).migrate()
    results = await asyncio.gather(
        *(Database(jobrunner_dsn, schema=schema).migrate() for _ in range(6))
    )
    applied = sorted(v for r in results for v in r)
    assert applied == VERSIONS  # each version applied exactly once across callers
    assert await catalogue(jobrunner_dsn, schema) == await catalogue(
        jobrunner_dsn, reference_schema
    )


def _cli_env(dsn: str, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBRUNNER_", "JOB_RUNNER"))}
    env.update(JOBRUNNER_DATABASE_URL=dsn, JOBRUNNER_SCHEMA=schema)
    return env


def _jobrunner_cmd() -> list[str]:
    script = Path(sys.executable).with_name("jobrunner")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobrunner.cli"]


async def test_cli_migrate_concurrent_processes_then_idempotent(
    jobrunner_dsn: str, fresh_schema: Callable[[], Any]
) -> None:
    schema, reference_schema = await fresh_schema(), await fresh_schema()
    await Database(jobrunner_dsn, schema=reference_schema).migrate()
    env = _cli_env(jobrunner_dsn, schema)
    procs = [
        await asyncio.create_subprocess_exec(
            *_jobrunner_cmd(),
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    texts = [out.decode() for out, _ in outputs]
    assert sum("applied migrations" in t for t in texts) >= 1
    assert await catalogue(jobrunner_dsn, schema) == await catalogue(
        jobrunner_dsn, reference_schema
    )
    again = await asyncio.create_subprocess_exec(
        *_jobrunner_cmd(),
        "migrate",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(again.communicate(), 120)
    assert again.returncode == 0, err.decode()
    assert f"schema {schema} is up to date" in out.decode()


def test_cli_migrate_in_process(
    jobrunner_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["migrate", "--database-url", jobrunner_dsn, "--schema", schema]) == 0
    first = capsys.readouterr().out
    assert "applied migrations 0001" in first and schema in first
    assert cli_main(["migrate", "--database-url", jobrunner_dsn, "--schema", schema]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert cli_main(["migrate", "--database-url", jobrunner_dsn, "--schema", "bad-name!"]) == 2
    assert "invalid schema name" in capsys.readouterr().err


def test_cli_migrate_without_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("JOBRUNNER_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert cli_main(["migrate"]) == 2
    assert "JOBRUNNER_DATABASE_URL" in capsys.readouterr().err
    assert cli_main(["migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/x"]) == 2
    assert "database unavailable" in capsys.readouterr().err


def _seed_columns() -> dict[str, list[tuple[str, str, bool]]]:
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", SEED_DDL, re.S):
        cols = []
        for line in body.strip().splitlines():
            line = line.split("--")[0].strip().rstrip(",")
            if not line or line.startswith(("PRIMARY KEY", "FOREIGN KEY")):
                continue
            column, kind = line.split()[:2]
            cols.append((column, kind, "NOT NULL" in line))
        tables[name] = cols
    return tables


async def test_seed_columns_and_types_present(runner: Any) -> None:
    seed = _seed_columns()
    assert set(seed) == {"jobs", "job_details"} and len(seed["jobs"]) == 11
    async with runner.db.connection() as conn:
        cur = await conn.execute(
            "SELECT table_name, column_name, data_type, udt_name, is_nullable "
            "FROM information_schema.columns WHERE table_schema = %s",
            (runner.schema,),
        )
        actual = {(r["table_name"], r["column_name"]): r for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = %s AND t.typname = 'job_status'",
            (runner.schema,),
        )
        labels = {r["enumlabel"] for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT rel.relname, pg_get_constraintdef(con.oid) AS def FROM pg_constraint con "
            "JOIN pg_class rel ON rel.oid = con.conrelid JOIN pg_namespace n "
            "ON n.oid = rel.relnamespace WHERE n.nspname = %s AND con.contype IN ('p', 'f')",
            (runner.schema,),
        )
        keys = {(r["relname"], r["def"]) for r in await cur.fetchall()}
    for table, columns in seed.items():
        for column, kind, not_null in columns:
            row = actual.get((table, column))
            assert row is not None, f"{table}.{column} missing"
            assert (row["data_type"], row["udt_name"]) == SEED_TYPES[kind], (table, column)
            if not_null:
                assert row["is_nullable"] == "NO", (table, column)
    assert {
        "pending",
        "processing",
        "completed",
        "failed",
        "active",
        "queued",
        "cancelled",
    } <= labels
    # jobs is partitioned by status (0009): each partition has the seed's primary key, and a
    # partitioned table can be referenced by no foreign key, so the statements that delete jobs
    # delete their job_details rows (test_monitoring's clear_history tests check that).
    assert ("jobs_live", "PRIMARY KEY (tenant, job_id)") in keys
    assert ("jobs_finished", "PRIMARY KEY (tenant, job_id)") in keys
    assert ("job_details", "PRIMARY KEY (tenant, detail_id)") in keys


async def test_seed_monitoring_sql_runs_unchanged(runner: Any, registry: Any) -> None:
    async def handler(ctx: Any, data: dict[str, Any]) -> None:
        async with ctx.step("only-step"):
            pass

    registry.add("seed-sql", handler)
    tenant = uuid.uuid4()
    from jobrunner.testing import running_worker

    async with running_worker(runner):
        handle = await runner.schedule_job("seed-sql", {}, tenant=tenant)
        await runner.wait_for_job(handle.job_id, tenant=tenant, timeout=30)
    statements = [s.strip() for s in SEED_QUERIES.split(";") if s.strip()]
    # Only the placeholders of the document are filled in; the SQL is otherwise unchanged.
    filled = [
        s.replace("'tenant-id'", f"'{tenant}'").replace("'job-id'", f"'{handle.job_id}'")
        for s in statements
    ]
    results = []
    async with runner.db.connection() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('search_path', %s, true)",
            (sql.Identifier(runner.schema).as_string(conn),),
        )
        for statement in filled:
            cur = await conn.execute(statement)  # type: ignore[arg-type]
            results.append(await cur.fetchall())
    by_tenant, steps, temporal, by_workflow = results
    assert [r["job_id"] for r in by_tenant] == [handle.job_id]
    assert by_tenant[0]["status"] == "completed" and by_tenant[0]["runner_type"] == "postgres"
    assert [r["step_name"] for r in steps] == ["only-step", "attempt"]
    assert temporal == [] and by_workflow == []


def test_subprocess_python_is_this_venv() -> None:
    assert (
        subprocess.run([*_jobrunner_cmd(), "--help"], capture_output=True, timeout=60).returncode
        == 0
    )
