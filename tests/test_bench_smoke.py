"""The benchmark suite in smoke mode (a few hundred jobs), so CI keeps it working.

Asserts only that every figure is produced and that the job counts are exact (the suite
itself fails on a lost or duplicated job); never a wall-clock limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    ("pgbench_simple_update", "tps"),
    ("pgbench_single_insert", "tps"),
    ("enqueue_single", "jobs_per_s"),
    ("enqueue_single", "ratio_vs_pgbench_insert"),
    ("enqueue_single", "ratio_vs_psycopg_insert"),
    ("enqueue_batch", "jobs_per_s"),
    ("enqueue_batch", "ratio_vs_sql_insert"),
    ("drain", "jobs_per_s"),
    ("drain", "worker_peak_rss"),
    ("drain", "worker_cpu_per_job"),
    ("drain_defaults", "jobs_per_s"),
    ("drain_tuned", "jobs_per_s"),
    ("drain_defaults", "ratio_vs_tuned"),
    ("drain_tenants_fair", "jobs_per_s"),
    ("drain_tenants_unfair", "jobs_per_s"),
    ("latency", "p50"),
    ("latency", "p95"),
    ("latency", "p99"),
    ("latency", "floor_p99"),
    ("latency", "p99_vs_floor"),
    ("scheduled", "lag_p50"),
    ("scheduled", "lag_p99"),
    ("history", "load_seconds"),
    ("drain_history", "jobs_per_s"),
    ("scale_out", "jobs_per_s_1_workers"),
    ("scale_out", "jobs_per_s_2_workers"),
}


@pytest.mark.timeout(600)
def test_bench_smoke(jobrunner_dsn: str, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--smoke",
            "--dsn",
            jobrunner_dsn,
            "--results",
            str(results),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    figures = [row for row in lines if "workload" in row]
    seen = {(row["workload"], row["metric"]) for row in figures}
    assert seen >= EXPECTED, EXPECTED - seen
    for row in figures:
        assert isinstance(row["value"], int | float), row
        assert row["value"] >= 0, row
    by_key = {(row["workload"], row["metric"]): row for row in figures}
    # Exact counts: the suite verified them against handler calls and the database.
    assert by_key[("enqueue_single", "jobs_per_s")]["jobs"] == 200
    assert by_key[("enqueue_batch", "jobs_per_s")]["jobs"] == 2_000
    assert by_key[("drain", "jobs_per_s")]["jobs"] == 300
    assert by_key[("drain_history", "jobs_per_s")]["finished_rows"] == 5_000
    assert by_key[("latency", "p99")]["jobs"] == 20
    assert by_key[("scheduled", "lag_p99")]["jobs"] == 5
    targets = [row for row in lines if "target" in row]
    assert len(targets) == 11, targets
    text = results.read_text()
    assert "## Targets" in text
    assert "## Scale-out" in text


FAIRNESS_EXPECTED = {
    ("drain", "jobs_per_s_flow_off"),
    ("drain", "jobs_per_s_flow_fair"),
    ("scenario_fair_on", "b_p50_alone"),
    ("scenario_fair_on", "b_p99_backlog_500"),
    ("scenario_fair_off", "b_p99_backlog_300"),
}


@pytest.mark.timeout(300)
def test_fairness_bench_smoke(jobrunner_dsn: str) -> None:
    """bench/fairness_bench.py (run by ``nox -s bench``) at a tiny size: every figure appears."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fairness_bench.py"),
            "--smoke",
            "--dsn",
            jobrunner_dsn,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    seen = {(row["workload"], row["metric"]) for row in rows if "workload" in row}
    assert seen >= FAIRNESS_EXPECTED, sorted(FAIRNESS_EXPECTED - seen)
