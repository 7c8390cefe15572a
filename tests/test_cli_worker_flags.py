"""``jobrunner-worker``'s tuning flags (issue 15): every worker setting the docs recommend is a
flag, parsed with the bounds of ``WorkerSettings.build``; a bad value exits with code 2 and a
one-line message before anything connects; a worker started with every flag runs jobs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobrunner import JobHandlerRegistry, JobStatus
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import build_parser, main
from jobrunner.cli._worker import worker_options
from test_worker_process import worker_process

#: No server listens here: a command that got as far as connecting would fail differently.
NOWHERE = "postgresql://nobody@127.0.0.1:9/nowhere?connect_timeout=1"

GOOD: list[tuple[list[str], dict[str, Any]]] = [
    ([], {}),
    (["--claim-batch", "250"], {"claim_batch": 250}),
    (["--prefetch", "0"], {"prefetch": 0}),
    (["--prefetch", "100000"], {"prefetch": 100_000}),
    (["--flush-interval", "0"], {"flush_interval": 0.0}),
    (["--flush-interval", "0.005"], {"flush_interval": 0.005}),
    (["--flush-max", "2000"], {"flush_max": 2000}),
    (["--sync-threads", "8"], {"sync_threads": 8}),
    (["--poll-interval", "0.5"], {"poll_interval": 0.5}),
    (["--heartbeat-interval", "2"], {"heartbeat_interval": 2.0}),
    (["--rescue-interval", "3"], {"rescue_interval": 3.0}),
    (["--listen-probe-interval", "60"], {"listen_probe_interval": 60.0}),
    (["--fair"], {"fair": True}),
    (["--no-fair"], {"fair": False}),
    (["--fair", "--no-fair"], {"fair": False}),  # the last one wins, as argparse has it
    (["--lease", "40", "--grace", "0"], {"lease_seconds": 40.0, "shutdown_grace": 0.0}),
    (["--no-scheduler"], {"run_scheduler": False}),
]


@pytest.mark.parametrize(("argv", "expected"), GOOD, ids=[" ".join(a) or "none" for a, _ in GOOD])
def test_flags_become_worker_settings(argv: list[str], expected: dict[str, Any]) -> None:
    """A flag left out is no option at all (the library's default applies, ``fair`` too)."""
    args = build_parser().parse_args(["worker", "--app", "json", *argv])
    options = worker_options(args)
    assert options == expected
    assert all(type(options[k]) is type(v) for k, v in expected.items())


BAD: list[tuple[list[str], str]] = [
    (["--claim-batch", "0"], "--claim-batch"),
    (["--claim-batch", "100001"], "--claim-batch"),
    (["--claim-batch", "many"], "--claim-batch"),
    (["--prefetch", "-1"], "--prefetch"),
    (["--prefetch", "1.5"], "--prefetch"),
    (["--flush-interval", "-0.1"], "--flush-interval"),
    (["--flush-interval", "nan"], "--flush-interval"),
    (["--flush-interval", "1e9"], "--flush-interval"),
    (["--flush-max", "0"], "--flush-max"),
    (["--sync-threads", "0"], "--sync-threads"),
    (["--poll-interval", "0"], "--poll-interval"),
    (["--poll-interval", "inf"], "--poll-interval"),
    (["--heartbeat-interval", "0"], "--heartbeat-interval"),
    (["--rescue-interval", "-1"], "--rescue-interval"),
    (["--listen-probe-interval", "86401"], "--listen-probe-interval"),
    (["--fair=yes"], "--fair"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_exit_2_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["worker", "--app", "json", "--database-url", NOWHERE, *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["--heartbeat-interval", "25"],  # the default lease
        ["--lease", "5", "--heartbeat-interval", "6"],
    ],
)
def test_contradicting_settings_exit_2_before_connecting(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOB_RUNNER_TYPE", raising=False)
    code = main(["worker", "--app", "json", "--database-url", NOWHERE, *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: heartbeat_interval must be shorter than lease_seconds", err


async def test_worker_with_every_tuning_flag_runs_jobs(
    jobrunner_dsn: str, schema: str, runner: PostgresJobRunner, registry: JobHandlerRegistry
) -> None:
    flags = [
        *("--concurrency", "4", "--claim-batch", "3", "--prefetch", "2"),
        *("--flush-interval", "0.01", "--flush-max", "2", "--sync-threads", "2"),
        *("--poll-interval", "0.5", "--heartbeat-interval", "1", "--rescue-interval", "2"),
        *("--listen-probe-interval", "30", "--no-fair"),
    ]
    registry.add("proc-echo", _not_here)  # the subprocess worker runs it
    tenant = uuid.uuid4()
    async with worker_process(jobrunner_dsn, schema, *flags) as wp:
        await wp.wait_for_line(r"jobrunner worker .* starting: .*concurrency=4")
        handles = [
            await runner.schedule_job("proc-echo", {"i": i}, tenant=tenant) for i in range(7)
        ]
        infos = [await runner.wait_for_job(h.job_id, tenant=tenant, timeout=60) for h in handles]
        wp.proc.terminate()
        assert await wp.wait() == 0, wp.output
    assert [i.status for i in infos] == [JobStatus.COMPLETED] * 7
    assert [i.result["echo"] for i in infos if i.result] == [{"i": i} for i in range(7)]


def _not_here(ctx: Any, data: dict[str, Any]) -> None:
    raise AssertionError("runs in the worker process")
