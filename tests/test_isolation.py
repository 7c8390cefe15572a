"""Tenant isolation: through the API (async and sync), the CLI and the dashboard another
tenant's job is "not found" and untouched; with ``jobrunner migrate --rls`` PostgreSQL itself
keeps a non-owner role to the tenants granted to it (``jobrunner tenants grant``), even with
hand-written SQL, ``SET jobrunner.tenant`` and ``SET ROLE``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from jobrunner import JobHandlerRegistry, RetryPolicy, SyncJobRunner
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main as cli_main
from jobrunner.testing import running_worker

A = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000000a")
B = uuid.UUID("bbbbbbbb-0000-4000-8000-00000000000b")


async def _ok(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    return {"tenant": str(ctx.tenant)}


async def _boom(ctx: Any, data: dict[str, Any]) -> None:
    raise RuntimeError("secret of tenant A")


@pytest.fixture
async def two_tenants(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> dict[str, Any]:
    """Tenant A: a completed, a failed and a queued job. Tenant B: one completed job."""
    registry.add("ok", _ok)
    registry.add("boom", _boom, retry=RetryPolicy(max_attempts=1))
    registry.add("idle", _ok, queue="parked")
    async with PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry) as runner:
        ids = {
            "done": (await runner.schedule_job("ok", {"who": "A"}, tenant=A)).job_id,
            "failed": (await runner.schedule_job("boom", {}, tenant=A)).job_id,
            "b_done": (await runner.schedule_job("ok", {"who": "B"}, tenant=B)).job_id,
        }
        async with running_worker(runner, queues=["default"]):
            for key, tenant in (("done", A), ("failed", A), ("b_done", B)):
                await runner.wait_for_job(ids[key], tenant=tenant, timeout=60)
        ids["queued"] = (await runner.schedule_job("idle", {"who": "A"}, tenant=A)).job_id
    return {"dsn": jobrunner_dsn, "schema": schema, "registry": registry, "ids": ids}


def snapshot(env: dict[str, Any]) -> str:
    with psycopg.connect(env["dsn"], autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT (SELECT string_agg(j::text, ',' ORDER BY job_id) FROM {}.jobs j) || "
                "(SELECT count(*) FROM {}.job_details)::text"
            ).format(sql.Identifier(env["schema"]), sql.Identifier(env["schema"]))
        ).fetchone()
    return str(rows[0]) if rows else ""


@contextlib.contextmanager
def unchanged(env: dict[str, Any]) -> Iterator[None]:
    before = snapshot(env)
    yield
    assert snapshot(env) == before, "tenant B changed tenant A's data"


# (method, job key) -> what tenant B gets for tenant A's job
CROSS_TENANT: list[tuple[str, str, Any]] = [
    ("get_job_status", "done", None),
    ("get_job_details", "failed", None),
    ("cancel_job", "queued", False),
    ("retry_job", "failed", False),
    ("pause_schedule", "queued", False),
    ("resume_schedule", "queued", False),
]


@pytest.mark.parametrize(
    ("method", "key", "expected"), CROSS_TENANT, ids=[c[0] for c in CROSS_TENANT]
)
async def test_api_other_tenant_is_not_found(
    two_tenants: dict[str, Any], method: str, key: str, expected: Any
) -> None:
    env = two_tenants
    async with PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"]
    ) as runner:
        with unchanged(env):
            assert await getattr(runner, method)(env["ids"][key], tenant=B) == expected
        # The owner still sees it.
        assert await runner.get_job_status(env["ids"][key], tenant=A) is not None


@pytest.mark.parametrize(
    ("method", "key", "expected"), CROSS_TENANT, ids=[c[0] for c in CROSS_TENANT]
)
def test_sync_twin_other_tenant_is_not_found(
    two_tenants: dict[str, Any], method: str, key: str, expected: Any
) -> None:
    env = two_tenants
    with (
        SyncJobRunner(
            PostgresJobRunner(env["dsn"], schema=env["schema"], registry=env["registry"])
        ) as runner,
        unchanged(env),
    ):
        assert getattr(runner, method)(env["ids"][key], tenant=B) == expected


async def test_listing_metrics_and_history_are_scoped(two_tenants: dict[str, Any]) -> None:
    env = two_tenants
    async with PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"]
    ) as runner:
        with unchanged(env):
            page = await runner.list_jobs(tenant=B)
            assert [j.job_id for j in page.jobs] == [env["ids"]["b_done"]]
            found = await runner.list_jobs(tenant=B, search="secret of tenant A")
            assert found.jobs == []
            by_id = await runner.list_jobs(tenant=B, search=str(env["ids"]["failed"]))
            assert by_id.jobs == []
            metrics = await runner.get_metrics(tenant=B)
            assert sum(metrics.by_status.values()) == 1
            assert await runner.list_schedules(tenant=B) == []
        # B clearing its history removes only B's finished job.
        assert await runner.clear_history(tenant=B, scope="all") == 1
        assert await runner.get_job_status(env["ids"]["done"], tenant=A) is not None
        assert await runner.get_job_status(env["ids"]["failed"], tenant=A) is not None


async def test_worker_context_and_singletons_carry_the_tenant(
    two_tenants: dict[str, Any],
) -> None:
    env = two_tenants
    async with PostgresJobRunner(
        env["dsn"], schema=env["schema"], registry=env["registry"]
    ) as runner:
        done_a = await runner.get_job_status(env["ids"]["done"], tenant=A)
        done_b = await runner.get_job_status(env["ids"]["b_done"], tenant=B)
        assert done_a is not None and done_a.result == {"tenant": str(A)}
        assert done_b is not None and done_b.result == {"tenant": str(B)}
        first = await runner.schedule_job("idle", {}, tenant=A, singleton_key="k")
        other = await runner.schedule_job("idle", {}, tenant=B, singleton_key="k")
        again = await runner.schedule_job("idle", {}, tenant=A, singleton_key="k")
        assert first.created and other.created and not again.created
        assert again.job_id == first.job_id != other.job_id


CLI_CROSS: list[tuple[str, list[str]]] = [
    ("show", ["jobs", "show", "{failed}", "--tenant", str(B)]),
    ("cancel", ["jobs", "cancel", "{queued}", "--tenant", str(B)]),
    ("retry", ["jobs", "retry", "{failed}", "--tenant", str(B)]),
    ("schedules-pause", ["schedules", "pause", "{queued}", "--tenant", str(B)]),
]


@pytest.mark.parametrize(("case", "argv"), CLI_CROSS, ids=[c[0] for c in CLI_CROSS])
def test_cli_other_tenant_is_not_found(
    two_tenants: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    argv: list[str],
) -> None:
    env = two_tenants
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", env["dsn"])
    monkeypatch.setenv("JOBRUNNER_SCHEMA", env["schema"])
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    args = [a.format(**{k: str(v) for k, v in env["ids"].items()}) for a in argv]
    with unchanged(env):
        code = cli_main(args)
    out = capsys.readouterr()
    assert code != 0, out.out
    assert "secret of tenant A" not in out.out + out.err
    assert '"who": "A"' not in out.out


def test_cli_listing_is_scoped(
    two_tenants: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = two_tenants
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", env["dsn"])
    monkeypatch.setenv("JOBRUNNER_SCHEMA", env["schema"])
    assert cli_main(["jobs", "list", "--tenant", str(B), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    text = json.dumps(listed)
    assert str(env["ids"]["b_done"]) in text
    for key in ("done", "failed", "queued"):
        assert str(env["ids"][key]) not in text


async def test_dashboard_restricted_to_a_tenant(two_tenants: dict[str, Any]) -> None:
    from jobrunner.dashboard import create_app

    env = two_tenants
    runner = PostgresJobRunner(env["dsn"], schema=env["schema"], registry=env["registry"])
    app = create_app(runner, tenant=B)
    ids = env["ids"]
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dash.test"
        ) as client:
            with unchanged(env):
                for path in (
                    f"/jobs/{A}/{ids['failed']}",
                    f"/api/jobs/{A}/{ids['failed']}",
                    f"/jobs/{B}/{ids['failed']}",
                    f"/api/jobs/{B}/{ids['done']}",
                ):
                    response = await client.get(path)
                    assert response.status_code == 404, path
                    assert "secret of tenant A" not in response.text
                listing = await client.get("/api/jobs", params={"tenant": str(A)})
                assert listing.status_code in (200, 400)
                assert str(ids["done"]) not in listing.text
                page = await client.get("/jobs", params={"q": "secret"})
                assert "secret of tenant A" not in page.text
                mine = await client.get("/api/jobs")
                assert str(ids["b_done"]) in mine.text and str(ids["done"]) not in mine.text
    finally:
        await runner.close()


# -- Row-Level Security ----------------------------------------------------------------------
@pytest.fixture
def restricted_role(two_tenants: dict[str, Any]) -> Iterator[str]:
    """A login role that does not own the tables, granted plain DML on them; dropped after."""
    env = two_tenants
    role = f"jr_rls_{uuid.uuid4().hex[:10]}"
    schema = sql.Identifier(env["schema"])
    with psycopg.connect(env["dsn"], autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                schema, sql.Identifier(role)
            )
        )
    try:
        yield role
    finally:
        with psycopg.connect(env["dsn"], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _as_role(dsn: str, role: str) -> psycopg.Connection[Any]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["user"] = role
    return psycopg.connect(psycopg.conninfo.make_conninfo(**params), autocommit=True)


def _grant_dml(dsn: str, schema: str, role: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )


def _flow_rows(env: dict[str, Any]) -> None:
    """Rows in the other tenant tables: a flow rule per tenant and a global one (NULL tenant),
    stride passes, and a rate event of A's rule."""
    s = sql.Identifier(env["schema"])
    with psycopg.connect(env["dsn"], autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.flow_rules (tenant, name, max_running) VALUES "
                "(%s, NULL, 5), (%s, NULL, 5), (NULL, 'ok', 3)"
            ).format(s=s),
            (A, B),
        )
        conn.execute(
            sql.SQL("INSERT INTO {s}.flow_tenant_pass (tenant) VALUES (%s), (%s)").format(s=s),
            (A, B),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.flow_rate_events (rule_id, at) "
                "SELECT rule_id, now() FROM {s}.flow_rules WHERE tenant = %s"
            ).format(s=s),
            (A,),
        )


#: Every tenant-scoped table -> the rows each tenant has in it after ``_flow_rows``.
TENANT_TABLES = ["jobs", "job_details", "schedules", "flow_rules", "flow_tenant_pass"]


def test_rls_keeps_a_non_owner_role_to_its_granted_tenant(
    two_tenants: dict[str, Any],
    restricted_role: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = two_tenants
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", env["dsn"])
    monkeypatch.setenv("JOBRUNNER_SCHEMA", env["schema"])
    s = sql.Identifier(env["schema"])
    _flow_rows(env)

    # Before: the plain grant shows every tenant's rows (the test can fail).
    with _as_role(env["dsn"], restricted_role) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}.jobs").format(s)).fetchone() == (4,)

    assert cli_main(["migrate", "--rls"]) == 0
    out = capsys.readouterr().out
    assert "row-level security on" in out
    for table in TENANT_TABLES:
        assert table in out
    assert cli_main(["migrate", "--rls"]) == 0  # idempotent
    # A careless admin grants everything again, the grants table included: still isolated.
    _grant_dml(env["dsn"], env["schema"], restricted_role)
    # Another role, granted tenant A, that the restricted role is no member of.
    other = f"{restricted_role}_a"
    with psycopg.connect(env["dsn"], autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(other)))
    _grant_dml(env["dsn"], env["schema"], other)
    try:
        assert cli_main(["tenants", "grant", other, str(A)]) == 0
        with _as_role(env["dsn"], restricted_role) as conn:
            for table in TENANT_TABLES:  # no grant yet: nothing at all
                q = sql.SQL("SELECT count(*) FROM {}.{}").format(s, sql.Identifier(table))
                assert conn.execute(q).fetchone() == (0,), table
        assert cli_main(["tenants", "grant", restricted_role, str(B)]) == 0
        assert cli_main(["tenants", "grant", restricted_role, str(B)]) == 0  # idempotent
        capsys.readouterr()
        assert cli_main(["tenants", "list"]) == 0
        listed = capsys.readouterr().out
        assert f"{restricted_role} {B}" in listed and f"{other} {A}" in listed
        assert cli_main(["tenants", "grant", restricted_role, "not-a-uuid"]) == 2
        assert cli_main(["tenants", "grant", "no_such_role_x", str(A)]) == 2
        _hostile_session(env, restricted_role, other)
    finally:
        with psycopg.connect(env["dsn"], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(other)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(other)))

    # The owner (jobrunner's own connections) keeps working across tenants.
    async def owner_view() -> tuple[Any, Any]:
        async with PostgresJobRunner(
            env["dsn"], schema=env["schema"], registry=env["registry"]
        ) as runner:
            return (
                await runner.get_job_status(env["ids"]["done"], tenant=A),
                await runner.get_job_status(env["ids"]["b_done"], tenant=B),
            )

    a_job, b_job = asyncio.run(owner_view())
    assert a_job is not None and b_job is not None

    assert cli_main(["tenants", "revoke", restricted_role, str(B)]) == 0
    with _as_role(env["dsn"], restricted_role) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}.jobs").format(s)).fetchone() == (0,)
    assert cli_main(["migrate", "--drop-rls"]) == 0
    with _as_role(env["dsn"], restricted_role) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}.jobs").format(s)).fetchone() == (4,)


def _hostile_session(env: dict[str, Any], role: str, other: str) -> None:
    """Hand-written SQL of a role granted tenant B, going after tenant A's rows."""
    s = sql.Identifier(env["schema"])
    expected_b = {"jobs": 1, "job_details": 1, "schedules": 0, "flow_rules": 1}
    expected_b["flow_tenant_pass"] = 1
    with _as_role(env["dsn"], role) as conn:

        def count(query: str, *params: Any) -> int:
            row = conn.execute(sql.SQL(query).format(s=s), params).fetchone()
            return int(row[0]) if row else -1

        def sees_only_b() -> None:
            for table, n in expected_b.items():
                t = sql.Identifier(table)
                assert count("SELECT count(*) FROM {s}.{t}".replace("{t}", t.as_string(None))) == (
                    n
                ), table
                q = "SELECT count(*) FROM {s}.{t} WHERE tenant IS DISTINCT FROM %s OR 1 = 1"
                assert count(q.replace("{t}", t.as_string(None)), B) == n, table
            assert count("SELECT count(*) FROM {s}.flow_rate_events") == 0  # A's rule's event
            assert count("SELECT count(*) FROM {s}.flow_rules WHERE tenant IS NULL") == 0

        sees_only_b()
        # The session setting only narrows: another tenant shows nothing, B shows B.
        for how in ("SET jobrunner.tenant = '{}'", "SET LOCAL jobrunner.tenant = '{}'"):
            if "LOCAL" in how:
                conn.execute("BEGIN")
            conn.execute(how.format(A))
            for table in TENANT_TABLES:
                t = sql.Identifier(table).as_string(None)
                assert count(f"SELECT count(*) FROM {{s}}.{t}") == 0, (how, table)
            if "LOCAL" in how:
                conn.execute("ROLLBACK")
        conn.execute("SELECT set_config('jobrunner.tenant', %s, false)", (str(B),))
        sees_only_b()
        conn.execute("RESET jobrunner.tenant")
        # The grants are not readable nor writable, nor answerable for another role, even
        # with a blanket GRANT ... ON ALL TABLES (RLS on tenant_roles has no policy at all).
        assert count("SELECT count(*) FROM {s}.tenant_roles") == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                sql.SQL(
                    "INSERT INTO {s}.tenant_roles (role, tenant) VALUES (current_user::regrole, %s)"
                ).format(s=s),
                (A,),
            )
        assert conn.execute(sql.SQL("DELETE FROM {s}.tenant_roles").format(s=s)).rowcount == 0
        assert (
            conn.execute(
                sql.SQL("UPDATE {s}.tenant_roles SET tenant = %s").format(s=s), (B,)
            ).rowcount
            == 0
        )
        assert conn.execute(
            sql.SQL("SELECT {}.rls_tenants(%s)").format(s), (other,)
        ).fetchone() == ([],)
        # SET ROLE to a role it is no member of (the one granted A, the owner) is refused.
        owner = str(
            conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'jobs'",
                (env["schema"],),
            ).fetchone()[0]
        )
        for target in (other, owner):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(target)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(owner)))
        # Writes aimed at A change nothing; moving rows to A or writing A's rows is refused.
        with unchanged(env):
            for table in TENANT_TABLES:
                t = sql.Identifier(table).as_string(None)
                upd = conn.execute(
                    sql.SQL(f"UPDATE {{s}}.{t} SET tenant = tenant WHERE tenant = %s").format(s=s),
                    (A,),
                )
                assert upd.rowcount == 0, table
                dele = conn.execute(
                    sql.SQL(f"DELETE FROM {{s}}.{t} WHERE tenant = %s OR tenant IS NULL").format(
                        s=s
                    ),
                    (A,),
                )
                assert dele.rowcount == 0, table
            assert conn.execute(sql.SQL("DELETE FROM {}.flow_rate_events").format(s)).rowcount == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("UPDATE {}.jobs SET tenant = %s").format(s), (A,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.jobs (tenant, type, status, user_id) VALUES "
                        "(%s, 'x', 'queued', %s)"
                    ).format(s),
                    (A, A),
                )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    sql.SQL("INSERT INTO {}.flow_rules (tenant, name) VALUES (NULL, 'x')").format(s)
                )
            # Internal tables are closed too: flow control cannot be switched off.
            assert (
                conn.execute(sql.SQL("UPDATE {}.flow_state SET enabled = false").format(s)).rowcount
                == 0
            )
        # A malformed setting is an error, never a wider view.
        conn.execute("SELECT set_config('jobrunner.tenant', %s, false)", ("' OR true --",))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute(sql.SQL("SELECT count(*) FROM {}.jobs").format(s))
