"""The short form of the fault-injection suite (``chaos/``), run with the normal tests.

Same faults as ``nox -s chaos`` with smaller numbers. Each scenario must lose nothing and
accept no completion from an attempt that lost its lease (fencing), and run a job more than
once only where a fault interrupted an attempt; a skipped scenario fails. Figures are printed;
timings are reported, never asserted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chaos import scenarios

pytestmark = pytest.mark.timeout(300)


def _check(report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2, default=str)
    print(text)
    # A scenario that did not run proves nothing: a skip is a failure here (deselect the test,
    # e.g. ``-m "not temporal"``, to leave a scenario out on purpose).
    assert "skipped" not in report, f"scenario skipped: {report['skipped']}"
    assert report["finished"], f"jobs still live at the deadline:\n{text}"
    assert report["lost"] == 0, text
    assert report["completed"] == report["jobs"], text
    assert report["fencing_violations"] == 0, text
    # Extra runs are allowed only for attempts a fault interrupted.
    assert report["extra_runs_unexplained"] == 0, text
    assert scenarios.problems(report) == [], text  # what ``python -m chaos`` exits 1 on


def test_kill_9_loses_nothing_and_fences_killed_attempts(jobrunner_dsn: str) -> None:
    report = scenarios.kill_workers(jobrunner_dsn)
    _check(report)
    assert report["faults"].get("kill", 0) >= 1, "no worker was killed mid-attempt"
    assert report["recovery_s"]["unrecovered"] == 0


def test_zombie_worker_cannot_complete_stale_attempts(jobrunner_dsn: str) -> None:
    report = scenarios.pause_worker(jobrunner_dsn)
    _check(report)
    assert report["faults"].get("sigstop", 0) >= 1
    # The frozen worker's jobs were taken over by lease expiry.
    assert report["recovery_s"]["requeued"] is not None


def test_terminated_connections_lose_nothing(jobrunner_dsn: str) -> None:
    report = scenarios.terminate_backends(jobrunner_dsn)
    _check(report)
    assert report["backends_terminated"] >= 1


def test_postgres_restart_loses_nothing() -> None:
    report = scenarios.restart_postgres()
    _check(report)
    assert report["faults"] == {"pg_restart": 1}


def test_silent_listener_falls_back_to_polling_then_recovers() -> None:
    report = scenarios.silent_listener()
    _check(report)
    assert report["jobs_never_started"] == 0
    assert report["wakeups_recovered_after_s"] is not None, "wakeups never recovered"


def test_sigterm_during_burst_requeues_and_exits_cleanly(jobrunner_dsn: str) -> None:
    report = scenarios.sigterm_burst(jobrunner_dsn)
    _check(report)
    assert report["sigterm_exit_codes"] == [0, 0, 0]


@pytest.mark.temporal
def test_temporal_worker_killed_and_server_restarted(jobrunner_dsn: str) -> None:
    report = scenarios.temporal(jobrunner_dsn)
    _check(report)
    assert report["faults"].get("temporal_restart") == 1
