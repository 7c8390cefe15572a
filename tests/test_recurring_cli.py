"""``jobrunner schedules list|pause|resume|cancel`` against a real database."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main


async def _setup(dsn: str, schema: str, tenant: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    async with PostgresJobRunner(dsn, schema=schema, require_registered=False) as runner:
        a = await runner.schedule_recurring_job(
            "report", {"k": 1}, "0 6 * * 1", tenant=tenant, timezone="Europe/Berlin"
        )
        plain = await runner.schedule_job("report", {}, tenant=tenant)
    return a.job_id, plain.job_id


def test_schedules_cli(
    jobrunner_dsn: str,
    schema: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    tenant = uuid.uuid4()
    sid, plain = asyncio.run(_setup(jobrunner_dsn, schema, tenant))
    db = ["--database-url", jobrunner_dsn, "--schema", schema]
    t = ["--tenant", str(tenant)]

    assert main(["schedules", "list", *db, *t]) == 0
    out = capsys.readouterr().out
    assert str(sid) in out and "0 6 * * 1" in out and "Europe/Berlin" in out and "active" in out

    assert main(["schedules", "list", *db]) == 0  # the system tenant has none
    assert "no schedules" in capsys.readouterr().out

    assert main(["schedules", "pause", str(sid), *db, *t, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "schedule_id": str(sid),
        "action": "pause",
        "ok": True,
    }
    assert main(["schedules", "list", *db, *t, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["paused"] is True and listed["next_run_at"] is None
    assert listed["job_id"] == str(sid) and listed["data"] == {"k": 1}

    assert main(["schedules", "resume", str(sid), *db, *t]) == 0
    assert f"resume: {sid}" in capsys.readouterr().out
    assert main(["schedules", "list", *db, *t, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["paused"] is False and listed["next_run_at"] is not None

    # Wrong tenant, unknown id, a plain job: not found, exit 1, nothing changed.
    assert main(["schedules", "pause", str(sid), *db]) == 1
    assert main(["schedules", "cancel", str(uuid.uuid4()), *db, *t]) == 1
    assert main(["schedules", "cancel", str(plain), *db, *t]) == 1
    capsys.readouterr()

    assert main(["schedules", "cancel", str(sid), *db, *t, "--reason", "retired"]) == 0
    assert f"cancel: {sid}" in capsys.readouterr().out
    assert main(["schedules", "list", *db, *t, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["schedules", "cancel", str(sid), *db, *t]) == 1

    # Malformed input is a clear error (exit 2), never a traceback.
    assert main(["schedules", "pause", "not-a-uuid", *db, *t]) == 2
    assert main(["schedules", "list", *db, "--tenant", "nope"]) == 2
    assert "error:" in capsys.readouterr().err


def test_sync_twin(jobrunner_dsn: str, schema: str) -> None:
    from jobrunner import ScheduleError, SyncJobRunner

    runner = SyncJobRunner(
        PostgresJobRunner(jobrunner_dsn, schema=schema, require_registered=False)
    )
    try:
        handle = runner.schedule_recurring_job("nightly", {"a": 1}, "@daily", timezone="UTC")
        again = runner.schedule_recurring_job("nightly", {"a": 2}, "@daily")
        assert again.job_id == handle.job_id
        [listed] = runner.list_schedules()
        assert listed.data == {"a": 2}
        assert runner.pause_schedule(handle.job_id) is True
        assert runner.resume_schedule(handle.job_id) is True
        with pytest.raises(ScheduleError):
            runner.schedule_recurring_job("nightly", {}, "@sometimes")
        assert runner.cancel_job(handle.job_id) is True
        assert runner.list_schedules() == []
    finally:
        runner.close()
