"""``jobrunner metrics``, ``jobrunner jobs ...`` and ``jobrunner history clear``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main
from jobrunner.testing import running_worker

T1 = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def cli_env(jobrunner_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Jobs in the test schema (one completed, one failed, one queued) and the CLI pointed at it."""
    registry = JobHandlerRegistry()

    async def ok(ctx: Any, data: dict[str, Any]) -> str:
        return "fine"

    async def boom(ctx: Any, data: dict[str, Any]) -> None:
        raise KeyError("missing-thing")

    registry.add("ok", ok)
    registry.add("boom", boom, retry=RetryPolicy(max_attempts=1))
    registry.add("idle", ok)

    async def setup() -> dict[str, Any]:
        async with PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry) as runner:
            ok_id = (await runner.schedule_job("ok", {"a": 1}, tenant=T1)).job_id
            bad_id = (await runner.schedule_job("boom", {}, tenant=T1)).job_id
            async with running_worker(runner):
                await runner.wait_for_job(ok_id, tenant=T1, timeout=30)
                await runner.wait_for_job(bad_id, tenant=T1, timeout=30)
            idle_id = (await runner.schedule_job("idle", {}, tenant=T1)).job_id
            return {"ok": ok_id, "bad": bad_id, "idle": idle_id}

    ids = asyncio.run(setup())
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", jobrunner_dsn)
    monkeypatch.setenv("JOBRUNNER_SCHEMA", schema)
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    return {"ids": ids, "dsn": jobrunner_dsn, "schema": schema}


def status_of(env: dict[str, Any], key: str) -> JobStatus | None:
    async def read() -> JobStatus | None:
        async with PostgresJobRunner(
            env["dsn"], schema=env["schema"], require_registered=False
        ) as runner:
            info = await runner.get_job_status(env["ids"][key], tenant=T1)
            return None if info is None else info.status

    return asyncio.run(read())


def test_metrics_table_and_json(
    cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["metrics", "--tenant", T1]) == 0
    out = capsys.readouterr().out
    assert "completed" in out
    assert "success rate" in out
    assert "50.0%" in out
    assert main(["metrics", "--all-tenants", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["by_status"]["failed"] == 1
    assert data["by_status"]["queued"] == 1
    assert len(data["throughput_per_minute"]) == 60
    assert main(["metrics", "--json"]) == 0  # the system tenant has nothing
    assert json.loads(capsys.readouterr().out)["total"] == 0


def test_jobs_list_filters_and_pages(
    cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = cli_env["ids"]
    assert main(["jobs", "list", "--tenant", T1, "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert str(ids["bad"]) in out
    assert str(ids["ok"]) not in out
    assert "missing-thing" in out
    assert main(["jobs", "list", "--all-tenants", "--json", "--limit", "2"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert len(page["jobs"]) == 2
    assert page["next_cursor"]
    assert main(["jobs", "list", "--all-tenants", "--json", "--cursor", page["next_cursor"]]) == 0
    rest = json.loads(capsys.readouterr().out)
    seen = {j["job_id"] for j in page["jobs"]} | {j["job_id"] for j in rest["jobs"]}
    assert seen == {str(v) for v in ids.values()}
    assert main(["jobs", "list", "--tenant", T1, "--since", "1h", "--search", "missing"]) == 0
    assert str(ids["bad"]) in capsys.readouterr().out
    assert main(["jobs", "list", "--tenant", T1, "--limit", "0"]) == 2
    assert "limit" in capsys.readouterr().err
    assert main(["jobs", "list", "--tenant", T1, "--cursor", "garbage!"]) == 2


def test_jobs_show(cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    bad = str(cli_env["ids"]["bad"])
    assert main(["jobs", "show", bad, "--tenant", T1]) == 0
    out = capsys.readouterr().out
    assert "Traceback" in out
    assert "missing-thing" in out
    assert "attempt" in out
    assert main(["jobs", "show", bad, "--tenant", T1, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["job"]["status"] == "failed"
    assert main(["jobs", "show", bad]) == 1  # another tenant: not found
    assert main(["jobs", "show", "not-a-uuid", "--tenant", T1]) == 2


def test_jobs_retry_and_cancel(cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ids = cli_env["ids"]
    assert main(["jobs", "retry", str(ids["ok"]), "--tenant", T1]) == 1  # completed
    assert main(["jobs", "retry", str(ids["bad"]), "--tenant", T1]) == 0
    assert status_of(cli_env, "bad") is JobStatus.QUEUED
    assert main(["jobs", "cancel", str(ids["idle"]), "--tenant", T1, "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["ok"] is True
    assert status_of(cli_env, "idle") is JobStatus.CANCELLED
    assert main(["jobs", "cancel", str(ids["idle"]), "--tenant", T1]) == 1


def test_history_clear(cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "clear", "--tenant", T1]) == 2  # needs --yes when not a terminal
    assert status_of(cli_env, "ok") is JobStatus.COMPLETED
    assert main(["history", "clear", "--tenant", T1, "--older-than-days", "1", "--yes"]) == 0
    assert "removed 0 jobs" in capsys.readouterr().out
    assert main(["history", "clear", "--all-tenants", "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": 1}
    assert status_of(cli_env, "ok") is None
    assert status_of(cli_env, "bad") is JobStatus.FAILED
    assert main(["history", "clear", "--tenant", T1, "--scope", "all", "--yes"]) == 0
    assert status_of(cli_env, "bad") is None
    assert status_of(cli_env, "idle") is JobStatus.QUEUED  # live: never removed


def test_dashboard_command_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--host" in out
    assert "--port" in out


def test_unknown_status_is_a_clear_error(
    cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["jobs", "list", "--status", "exploded"]) == 2
    assert "unknown status" in capsys.readouterr().err


def test_metrics_show_flow_control(
    cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Flow control is visible in `jobrunner metrics`: off by default, then the rule with its
    usage once a limit is set at run time (and in --json under extra.flow)."""
    assert main(["metrics", "--tenant", T1]) == 0
    assert "Flow control: off" in capsys.readouterr().out

    async def limit() -> None:
        async with PostgresJobRunner(
            cli_env["dsn"], schema=cli_env["schema"], require_registered=False
        ) as runner:
            await runner.flow.set_concurrency_limit(tenant=T1, limit=3)

    asyncio.run(limit())
    assert main(["metrics", "--tenant", T1]) == 0
    out = capsys.readouterr().out
    assert "Flow control: on" in out
    assert "0 / 3" in out and T1 in out
    assert main(["metrics", "--tenant", T1, "--json"]) == 0
    flow = json.loads(capsys.readouterr().out)["extra"]["flow"]
    assert flow["enabled"] is True
    assert [r["max_running"] for r in flow["rules"]] == [3]
