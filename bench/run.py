"""jobrunner benchmark suite: enqueue, drain, latency, scheduled lag, history, scale-out.

Usage (from the repository root)::

    python bench/run.py                 # full run (minutes), writes bench/RESULTS.md
    python bench/run.py --smoke         # a few hundred jobs, for CI
    python bench/run.py --only drain,latency --dsn postgresql://postgres@127.0.0.1:5432/postgres

Every workload runs on a fresh database (``CREATE DATABASE bench_...``, dropped afterwards) of
the server given by ``--dsn``. Each figure is printed as one JSON line on stdout; the Markdown
summary (machine facts, figures, ratios vs the targets of issue #7) goes to ``--results``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobrunner import JobHandlerRegistry
from jobrunner.backends.postgres import PostgresJobRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_floor import produce as latency_floor

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker_proc.py"
JOB_NAME = "bench.noop"
DEFAULT_DSN = os.environ.get("JOBRUNNER_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

#: What ``create_worker()`` / ``jobrunner-worker`` get without options (the runner's own pool
#: size included).
DEFAULTS: dict[str, Any] = {
    "pool_size": inspect.signature(PostgresJobRunner).parameters["pool_size"].default,
}

#: The worker settings the docs recommend (docs/performance.md): the defaults, which drain at
#: least as fast as any tuned settings measured. Every drain, latency and scale-out workload
#: runs with these (``--settings`` overrides them).
RECOMMENDED: dict[str, Any] = dict(DEFAULTS)

#: The hand-tuned throughput settings the docs recommended before the prefetch made the
#: defaults fast: the other side of the ``drain_defaults`` workload.
TUNED: dict[str, Any] = {
    "concurrency": 500,
    "claim_batch": 500,
    "flush_interval": 0.005,
    "flush_max": 2000,
    "pool_size": 4,
}


def unfair(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with fair claiming switched off for this worker (priority order across
    tenants): the other side of the ``drain_tenants`` workload."""
    return {**settings, "fair": False}


@dataclass
class Sizes:
    enqueue_single: int
    enqueue_batch: int
    drain: int
    latency: int
    scheduled: int
    scheduled_delay: float
    history: int
    pgbench_seconds: int
    insert_seconds: int
    scale_out: tuple[int, ...]
    repeats: int
    """Drains per figure (median reported), interleaved empty / history to cancel drift."""


FULL = Sizes(10_000, 50_000, 20_000, 200, 50, 2.0, 1_000_000, 15, 10, (1, 2, 4), 3)
SMOKE = Sizes(200, 2_000, 300, 20, 5, 0.5, 5_000, 2, 2, (1, 2), 1)


@dataclass
class Bench:
    dsn: str
    sizes: Sizes
    figures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drains: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def record(self, workload: str, metric: str, value: float, unit: str, **extra: Any) -> None:
        row = {"workload": workload, "metric": metric, "value": round(value, 3), "unit": unit}
        row.update(extra)
        self.figures.append(row)
        print(json.dumps(row), flush=True)

    def mean(self, workload: str, metric: str) -> float | None:
        """Mean over every recording (the baselines run at the start and at the end)."""
        found = [
            float(r["value"])
            for r in self.figures
            if r["workload"] == workload and r["metric"] == metric
        ]
        return statistics.fmean(found) if found else None

    def value(self, workload: str, metric: str) -> float | None:
        for row in reversed(self.figures):
            if row["workload"] == workload and row["metric"] == metric:
                return float(row["value"])
        return None


# -- databases ---------------------------------------------------------------------------------
def _with_db(dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)


@contextlib.contextmanager
def fresh_database(bench: Bench, label: str) -> Any:
    """A new database for one workload; dropped afterwards."""
    name = f"bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(bench.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_db(bench.dsn, name)
    finally:
        with psycopg.connect(bench.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def backend_cpu(dsn: str) -> dict[int, float] | None:
    """CPU seconds (user+system) of every server backend connected to the database of ``dsn``.

    Read from /proc, so only when the server runs on this machine (else ``None``).
    """
    tick = os.sysconf("SC_CLK_TCK")
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        ]
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out if out or not pids else None


def cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    if before is None or after is None:
        return None
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def make_runner(dsn: str, *, pool_size: int = 2) -> PostgresJobRunner:
    registry = JobHandlerRegistry()

    async def noop(ctx: Any, data: dict[str, Any]) -> None:
        return None

    registry.add(JOB_NAME, noop)
    return PostgresJobRunner(dsn, registry=registry, pool_size=pool_size)


def maintenance(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt)  # type: ignore[arg-type]


async def enqueue_many(runner: PostgresJobRunner, n: int, tenants: int = 1) -> None:
    """``n`` jobs in calls of 1,000; with ``tenants`` > 1 the calls rotate over that many
    tenants (so every tenant has a backlog and a fair claim has several to share between)."""
    owners = [None] + [uuid.UUID(int=(0x5000 << 64) + t) for t in range(1, tenants)]
    for call, start in enumerate(range(0, n, 1000)):
        await runner.schedule_jobs(
            JOB_NAME,
            [{"i": i} for i in range(start, min(n, start + 1000))],
            tenant=owners[call % tenants],
        )


# -- worker processes --------------------------------------------------------------------------
class WorkerProc:
    """A bench/worker_proc.py child speaking the line protocol described there."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started_at: float | None = None
        self.cpu_start = 0.0
        self.cpu_last = 0.0
        self.committed = 0
        self.result: dict[str, Any] | None = None
        self.on_commit: Callable[[dict[str, Any]], None] | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, dsn: str, mode: str, settings: dict[str, Any]) -> WorkerProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "--dsn",
            dsn,
            "--mode",
            mode,
            "--settings",
            json.dumps(settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**24,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            event = json.loads(raw)
            if event["event"] == "started":
                self.started_at = event["t"]
                self.cpu_start = event["cpu"]
            elif event["event"] == "committed":
                self.committed = event["total"]
                self.cpu_last = event["cpu"]
                if self.on_commit is not None:
                    self.on_commit(event)
            elif event["event"] == "result":
                self.result = event
            await self.events.put(event)

    async def wait_for(self, kind: str, timeout: float = 120.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event["event"] == kind:
                    return event

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")

    async def finish(self) -> dict[str, Any]:
        self.send("exit")
        await self.proc.wait()
        await self._reader
        if self.result is None:
            raise RuntimeError(
                f"worker {self.proc.pid} exited ({self.proc.returncode}) without a result"
            )
        return self.result


async def run_drain(
    bench: Bench, dsn: str, n: int, processes: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """Start ``processes`` workers on ``n`` queued jobs; time until the last completion commits."""
    workers = [await WorkerProc.spawn(dsn, "drain", settings) for _ in range(processes)]
    for w in workers:
        await w.wait_for("ready")
    before = backend_cpu(dsn)
    for w in workers:
        w.send("go")
    finished = asyncio.Event()
    end: list[float] = []

    def on_commit(event: dict[str, Any]) -> None:
        if not end and sum(w.committed for w in workers) >= n:
            end.append(event["t"])
            finished.set()

    for w in workers:
        w.on_commit = on_commit
    async with asyncio.timeout(600):
        await finished.wait()
    after = backend_cpu(dsn)
    worker_cpu = sum(w.cpu_last - w.cpu_start for w in workers)
    results = [await w.finish() for w in workers]
    start = min(w.started_at for w in workers if w.started_at is not None)
    calls = sum(r["calls"] for r in results)
    with psycopg.connect(dsn, autocommit=True) as conn:
        counts = dict(
            conn.execute(
                "SELECT status::text, count(*) FROM jobrunner.jobs WHERE type = %s GROUP BY 1",
                (JOB_NAME,),
            ).fetchall()
        )
    return {
        "seconds": end[0] - start,
        "jobs_per_s": n / (end[0] - start),
        "calls": calls,
        "db_completed": counts.get("completed", 0),
        "db_other": {k: v for k, v in counts.items() if k != "completed"},
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "held_wait_ms": max(
            (r.get("held_wait_ms") or {} for r in results), key=lambda h: h.get("max", 0)
        ),
        "pg_cpu_s": cpu_delta(before, after),
        "worker_cpu_s": worker_cpu,
    }


# -- workloads ---------------------------------------------------------------------------------
def pgbench(bench: Bench, *args: str, dsn: str) -> float:
    exe = shutil.which("pgbench")
    if exe is None:
        raise RuntimeError("pgbench not found on PATH")
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = dict(os.environ)
    env.update(
        {
            "PGHOST": str(params.get("host", "")),
            "PGPORT": str(params.get("port", 5432)),
            "PGUSER": str(params.get("user", "postgres")),
            "PGDATABASE": str(params["dbname"]),
        }
    )
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    out = subprocess.run([exe, *args], env=env, check=True, capture_output=True, text=True)
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if not found:
        found = re.search(r"tps = ([0-9.]+)", out.stdout)
    return float(found.group(1)) if found else 0.0


async def w_baselines(bench: Bench) -> None:
    s = bench.sizes
    with fresh_database(bench, "pgbench") as dsn:
        pgbench(bench, "-i", "-q", "-s", "10" if s is FULL else "1", dsn=dsn)
        maintenance(dsn, "CHECKPOINT")
        tps = pgbench(
            bench, "-n", "-N", "-c", "8", "-j", "2", "-T", str(s.pgbench_seconds), dsn=dsn
        )
        bench.record("pgbench_simple_update", "tps", tps, "tx/s", clients=8)
    with fresh_database(bench, "insert") as dsn:
        maintenance(dsn, "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, v integer)")
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
            fh.write(INSERT_SCRIPT)
        try:
            tps = pgbench(
                bench, "-n", "-c", "1", "-T", str(s.insert_seconds), "-f", fh.name, dsn=dsn
            )
        finally:
            os.unlink(fh.name)
        bench.record("pgbench_single_insert", "tps", tps, "tx/s", clients=1)


INSERT_SCRIPT = "\\set v random(1, 1000000)\nINSERT INTO bench_insert (v) VALUES (:v);\n"


async def w_enqueue_single(bench: Bench) -> None:
    """``schedule_job`` calls in rounds, each round next to two baselines on the same server
    (same machine load: single-client figures swing most on a shared machine): pgbench's
    one-client INSERT of one small row, and the same INSERT through psycopg from this process
    (what a Python client reaches at best, with this interpreter and driver)."""
    n = bench.sizes.enqueue_single
    rounds = 10 if n >= 5_000 else 1
    per_round = n // rounds
    slice_s = max(1, bench.sizes.insert_seconds // rounds)
    elapsed = 0.0
    baseline: list[float] = []
    client: list[float] = []
    ratios: list[tuple[float, float]] = []
    with fresh_database(bench, "single") as dsn, fresh_database(bench, "insert") as ins:
        maintenance(ins, "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, v integer)")
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
            fh.write(INSERT_SCRIPT)
        runner = make_runner(dsn)
        await runner.start()
        plain = await psycopg.AsyncConnection.connect(ins, autocommit=True)
        try:
            for i in range(20):  # connection set-up and statement preparation
                await runner.schedule_job(JOB_NAME, {"warm": i})
                await plain.execute(PSYCOPG_INSERT, (i,))
            done = 0
            for r in range(rounds):
                baseline.append(
                    pgbench(bench, "-n", "-c", "1", "-T", str(slice_s), "-f", fh.name, dsn=ins)
                )
                count = per_round if r < rounds - 1 else n - done
                t0 = time.perf_counter()
                for i in range(count):
                    await plain.execute(PSYCOPG_INSERT, (i,))
                client.append(count / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                for i in range(done, done + count):
                    await runner.schedule_job(JOB_NAME, {"i": i})
                took = time.perf_counter() - t0
                elapsed += took
                done += count
                ratios.append((count / took / baseline[-1], count / took / client[-1]))
        finally:
            await plain.close()
            await runner.close()
            os.unlink(fh.name)
        with psycopg.connect(dsn) as conn:
            total = conn.execute("SELECT count(*) FROM jobrunner.jobs").fetchone()[0]  # type: ignore[index]
    assert total == n + 20, total
    bench.record("enqueue_single", "jobs_per_s", n / elapsed, "jobs/s", jobs=n, rounds=rounds)
    bench.record(
        "enqueue_single",
        "paired_insert_tps",
        statistics.fmean(baseline),
        "tx/s",
        rounds=rounds,
        samples=[round(b) for b in baseline],
    )
    bench.record(
        "enqueue_single",
        "psycopg_insert_per_s",
        statistics.fmean(client),
        "tx/s",
        rounds=rounds,
        samples=[round(c) for c in client],
    )
    # Per round, then the median: load drifting between rounds cancels.
    bench.record(
        "enqueue_single",
        "ratio_vs_pgbench_insert",
        statistics.median(r[0] for r in ratios),
        "x",
        samples=[round(r[0], 3) for r in ratios],
    )
    bench.record(
        "enqueue_single",
        "ratio_vs_psycopg_insert",
        statistics.median(r[1] for r in ratios),
        "x",
        samples=[round(r[1], 3) for r in ratios],
    )


#: The Python baseline of enqueue-single: the one-row INSERT of INSERT_SCRIPT through psycopg.
PSYCOPG_INSERT = "INSERT INTO bench_insert (v) VALUES (%s)"

#: The SQL ceiling of enqueue-batch: 1,000 jobs of the same shape as a bulk enqueue's, into
#: the same partition, in one statement and one transaction, run by pgbench (no Python).
BATCH_SQL_SCRIPT = """\\set i random(1, 1000000)
INSERT INTO jobrunner.jobs_live (tenant, job_id, type, metadata, status, created_at, updated_at,
    user_id, runner_type, queue, priority, run_at, data, max_attempts)
SELECT '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'bench.noop', '{}', 'queued',
       timezone('utc', now()), timezone('utc', now()), '00000000-0000-0000-0000-000000000000',
       'postgres', 'default', 0, now(), jsonb_build_object('i', g + :i), 3
FROM generate_series(1, 1000) AS g;
"""


async def w_enqueue_batch(bench: Bench) -> None:
    """``schedule_jobs`` of 1,000 jobs per call, in rounds alternating with the same 1,000-row
    insert as pure SQL run by pgbench into the same database (the ceiling without Python and
    the driver: docs/performance.md)."""
    n = bench.sizes.enqueue_batch
    rounds = 5 if n >= 10_000 else 1
    calls = n // 1000
    elapsed = 0.0
    sql_rates: list[float] = []
    ratios: list[float] = []
    with fresh_database(bench, "batch") as dsn:
        runner = make_runner(dsn)
        await runner.start()
        payloads = [[{"i": i} for i in range(start, start + 1000)] for start in range(0, n, 1000)]
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
            fh.write(BATCH_SQL_SCRIPT)
        sql_rows = 0
        try:
            await runner.schedule_jobs(JOB_NAME, [{"warm": i} for i in range(1000)])
            done = 0
            for r in range(rounds):
                count = calls // rounds if r < rounds - 1 else calls - done
                t0 = time.perf_counter()
                for batch in payloads[done : done + count]:
                    await runner.schedule_jobs(JOB_NAME, batch)
                took = time.perf_counter() - t0
                elapsed += took
                done += count
                before = _count_jobs(dsn)
                tps = pgbench(
                    bench, "-n", "-c", "1", "-t", str(max(count, 2)), "-f", fh.name, dsn=dsn
                )
                sql_rows += _count_jobs(dsn) - before
                sql_rates.append(tps * 1000)
                ratios.append(count * 1000 / took / sql_rates[-1])
        finally:
            await runner.close()
            os.unlink(fh.name)
        count_all = _count_jobs(dsn)
    assert count_all == n + 1000 + sql_rows, count_all
    bench.record("enqueue_batch", "jobs_per_s", n / elapsed, "jobs/s", jobs=n, batch=1000)
    bench.record(
        "enqueue_batch",
        "sql_insert_rows_per_s",
        statistics.fmean(sql_rates),
        "rows/s",
        rounds=rounds,
        samples=[round(x) for x in sql_rates],
    )
    bench.record(
        "enqueue_batch",
        "ratio_vs_sql_insert",
        statistics.median(ratios),
        "x",
        samples=[round(x, 2) for x in ratios],
    )


def _count_jobs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM jobrunner.jobs").fetchone()[0])  # type: ignore[index]


async def _prepare_drain(dsn: str, n: int, tenants: int = 1) -> None:
    runner = make_runner(dsn)
    await runner.start()
    try:
        await enqueue_many(runner, n, tenants)
    finally:
        await runner.close()
    # Autovacuum would have analyzed the table by now; do it so every run plans alike.
    maintenance(dsn, "ANALYZE jobrunner.jobs", "CHECKPOINT")


async def _one_drain(
    bench: Bench,
    label: str,
    dsn: str,
    settings: dict[str, Any] | None = None,
    tenants: int = 1,
) -> None:
    """Enqueue and drain once on ``dsn`` (with the recommended settings unless ``settings``);
    keep the result among ``label``'s samples."""
    n = bench.sizes.drain
    await _prepare_drain(dsn, n, tenants)
    res = await run_drain(bench, dsn, n, 1, RECOMMENDED if settings is None else settings)
    _check_drain(res, n)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        # Later rounds on the same database: this round's jobs become history too.
        await conn.execute(
            "UPDATE jobrunner.jobs SET type = 'bench.history' WHERE type = %s", (JOB_NAME,)
        )
    bench.drains.setdefault(label, []).append(res)
    print(
        json.dumps(
            {
                "sample": label,
                "jobs_per_s": round(res["jobs_per_s"], 1),
                "pg_cpu_s": res["pg_cpu_s"],
            }
        ),
        flush=True,
    )


def _record_drains(bench: Bench, label: str, finished_rows: int) -> None:
    """Median of the samples (the machine is shared; single drains swing)."""
    runs = bench.drains[label]
    n = bench.sizes.drain
    mid = statistics.median
    bench.record(
        label,
        "jobs_per_s",
        mid(r["jobs_per_s"] for r in runs),
        "jobs/s",
        jobs=n,
        finished_rows=finished_rows,
        runs=len(runs),
        samples=[round(r["jobs_per_s"]) for r in runs],
    )
    bench.record(label, "worker_peak_rss", max(r["peak_rss_mb"] for r in runs), "MiB")
    cpu = [r["pg_cpu_s"] for r in runs if r["pg_cpu_s"] is not None]
    if cpu:
        bench.record(label, "pg_cpu_per_job", mid(cpu) / n * 1e6, "us/job")
    bench.record(
        label, "worker_cpu_per_job", mid(r["worker_cpu_s"] for r in runs) / n * 1e6, "us/job"
    )


async def w_drain(bench: Bench) -> None:
    for _ in range(bench.sizes.repeats):
        with fresh_database(bench, "drain") as dsn:
            await _one_drain(bench, "drain", dsn)
    _record_drains(bench, "drain", 0)


async def w_drain_defaults(bench: Bench) -> None:
    """The drain with the worker's defaults and with the tuned settings, in interleaved
    rounds (the order alternates), each on a fresh database; the ratio of each round's pair,
    so the machine's load drifting between rounds cancels."""
    for r in range(bench.sizes.repeats):
        order = [("drain_defaults", DEFAULTS), ("drain_tuned", TUNED)]
        for label, settings in order if r % 2 == 0 else order[::-1]:
            with fresh_database(bench, "defaults") as dsn:
                await _one_drain(bench, label, dsn, settings)
    for label in ("drain_defaults", "drain_tuned"):
        _record_drains(bench, label, 0)
        # How long claimed jobs waited in the worker for a slot (the prefetch's cost to
        # fairness): the worst p99 and the longest wait over the rounds.
        waits = [r["held_wait_ms"] for r in bench.drains[label] if r.get("held_wait_ms")]
        if waits:
            bench.record(label, "held_wait_p99", max(w["p99"] for w in waits), "ms")
            bench.record(label, "held_wait_max", max(w["max"] for w in waits), "ms")
    ratios = [
        d["jobs_per_s"] / t["jobs_per_s"]
        for d, t in zip(bench.drains["drain_defaults"], bench.drains["drain_tuned"], strict=True)
    ]
    bench.record(
        "drain_defaults",
        "ratio_vs_tuned",
        statistics.median(ratios),
        "x",
        rounds=len(ratios),
        samples=[round(x, 2) for x in ratios],
        defaults=json.dumps(DEFAULTS),
        tuned=json.dumps(TUNED),
    )


#: Tenants of the multi-tenant drain: enough that the fair claim shares every batch.
DRAIN_TENANTS = 10


async def w_drain_tenants(bench: Bench) -> None:
    """The drain with the jobs of ``DRAIN_TENANTS`` tenants, fair claiming on (the default)
    and off, in interleaved rounds on fresh databases: what fairness costs the drain."""
    for r in range(bench.sizes.repeats):
        order = [
            ("drain_tenants_fair", RECOMMENDED),
            ("drain_tenants_unfair", unfair(RECOMMENDED)),
        ]
        for label, settings in order if r % 2 == 0 else order[::-1]:
            with fresh_database(bench, "tenants") as dsn:
                await _one_drain(bench, label, dsn, settings, tenants=DRAIN_TENANTS)
    for label in ("drain_tenants_fair", "drain_tenants_unfair"):
        _record_drains(bench, label, 0)


async def w_history(bench: Bench) -> None:
    """Drains with the finished rows present, each followed by an empty-table drain."""
    with fresh_database(bench, "history") as dsn:
        await _load_history(bench, dsn, bench.sizes.history)
        for _ in range(bench.sizes.repeats):
            await _one_drain(bench, "drain_history", dsn)
            with fresh_database(bench, "drain") as empty:
                await _one_drain(bench, "drain", empty)
    _record_drains(bench, "drain_history", bench.sizes.history)
    _record_drains(bench, "drain", 0)  # now including the interleaved empty drains


def _check_drain(res: dict[str, Any], n: int) -> None:
    if res["calls"] != n or res["db_completed"] != n or res["db_other"]:
        raise AssertionError(
            f"drain of {n}: {res['calls']} handler calls, {res['db_completed']} completed, "
            f"others {res['db_other']}"
        )


async def _load_history(bench: Bench, dsn: str, n: int) -> None:
    """``n`` finished jobs (90 % completed, 10 % failed) with one attempt row each, via COPY."""
    t0 = time.perf_counter()
    runner = make_runner(dsn)
    await runner.start()  # migrations
    await runner.close()
    tenants = [uuid.UUID(int=(0x4000 << 64) + t) for t in range(16)]
    now = datetime.now(UTC).replace(tzinfo=None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY jobrunner.jobs (tenant, job_id, type, status, created_at, updated_at,"
                " user_id, data, result, progress, attempts, max_attempts, run_at, started_at,"
                " completed_at, lease_token) FROM STDIN"
            ) as copy,
        ):
            chunk: list[str] = []
            for g in range(n):
                at = (now - timedelta(seconds=2 * (n - g))).isoformat()
                status = "failed" if g % 10 == 0 else "completed"
                result = "\\N" if status == "failed" else '{"ok": true}'
                chunk.append(
                    f"{tenants[g % 16]}\t{uuid.uuid4()}\tbench.history\t{status}\t{at}\t{at}\t"
                    f'00000000-0000-0000-0000-000000000000\t{{"i": {g}}}\t{result}\t100\t1\t1\t'
                    f"{at}+00\t{at}+00\t{at}+00\t1\n"
                )
                if len(chunk) >= 20_000:
                    copy.write("".join(chunk))
                    chunk = []
            copy.write("".join(chunk))
        # One attempt row per finished job, as the worker writes them.
        conn.execute("""
            INSERT INTO jobrunner.job_details (tenant, job_id, step_name, status, processed_at,
                retry_count, metadata)
            SELECT tenant, job_id, 'attempt', status, completed_at, 1,
                   '{"duration_ms": 1.0}'::jsonb
            FROM jobrunner.jobs WHERE type = 'bench.history'""")
    maintenance(dsn, "VACUUM ANALYZE jobrunner.jobs", "VACUUM ANALYZE jobrunner.job_details")
    bench.record("history", "load_seconds", time.perf_counter() - t0, "s", finished_rows=n)


async def w_scale_out(bench: Bench) -> None:
    n = bench.sizes.drain
    for processes in bench.sizes.scale_out:
        with fresh_database(bench, f"scale{processes}") as dsn:
            await _prepare_drain(dsn, n)
            res = await run_drain(bench, dsn, n, processes, RECOMMENDED)
        _check_drain(res, n)
        bench.record(
            "scale_out",
            f"jobs_per_s_{processes}_workers",
            res["jobs_per_s"],
            "jobs/s",
            processes=processes,
            jobs=n,
        )


async def _paced_worker_run(
    bench: Bench, dsn: str, mode: str, n: int, enqueue: Callable[[PostgresJobRunner, int], Any]
) -> list[float]:
    runner = make_runner(dsn)
    await runner.start()  # migrations, before the worker polls the tables
    worker = await WorkerProc.spawn(dsn, mode, RECOMMENDED)
    await worker.wait_for("ready")
    worker.send("go")
    await worker.wait_for("started")
    try:
        for i in range(5):  # warm the producer's connection and prepared statements
            await runner.schedule_job(
                JOB_NAME, {"warm": i, "t": time.monotonic(), "due": time.time()}
            )
        await asyncio.sleep(1.0)  # the worker is idle (and listening) when the run starts
        base = worker.committed
        t_next = time.monotonic()
        for i in range(n):
            t_next += 0.020
            await enqueue(runner, i)
            await asyncio.sleep(max(0.0, t_next - time.monotonic()))
        async with asyncio.timeout(120):
            while worker.committed < base + n:
                await worker.wait_for("committed")
    finally:
        await runner.close()
    result = await worker.finish()
    samples = [s for s in result["samples"][5:]]
    assert len(samples) == n, (len(samples), n)
    return samples


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def w_latency(bench: Bench) -> None:
    n = bench.sizes.latency

    async def enqueue(runner: PostgresJobRunner, i: int) -> None:
        await runner.schedule_job(JOB_NAME, {"i": i, "t": time.monotonic()})

    with fresh_database(bench, "latency") as dsn:
        # This machine's floor, same database and pacing: the smallest durable
        # LISTEN/NOTIFY queue (bench/latency_floor.py), right before the worker's run.
        floor = await latency_floor(dsn, n)
        samples = await _paced_worker_run(bench, dsn, "latency", n, enqueue)
    for q in (50, 95, 99):
        bench.record("latency", f"p{q}", _pct(samples, q) * 1000, "ms", jobs=n)
        bench.record("latency", f"floor_p{q}", _pct(floor, q) * 1000, "ms", jobs=n)
    bench.record("latency", "p99_vs_floor", _pct(samples, 99) / _pct(floor, 99), "x")


async def w_scheduled(bench: Bench) -> None:
    n = bench.sizes.scheduled
    delay = bench.sizes.scheduled_delay

    async def enqueue(runner: PostgresJobRunner, i: int) -> None:
        due = datetime.now(UTC) + timedelta(seconds=delay)
        await runner.schedule_job_at(JOB_NAME, {"i": i, "due": due.timestamp()}, due)

    with fresh_database(bench, "scheduled") as dsn:
        samples = await _paced_worker_run(bench, dsn, "scheduled", n, enqueue)
        # the run waits for all n completions, which come delay seconds after the last enqueue
    for q in (50, 99):
        bench.record("scheduled", f"lag_p{q}", _pct(samples, q) * 1000, "ms", jobs=n, delay_s=delay)


WORKLOADS: dict[str, Callable[[Bench], Any]] = {
    "baselines": w_baselines,
    "enqueue_single": w_enqueue_single,
    "enqueue_batch": w_enqueue_batch,
    "drain": w_drain,
    "drain_defaults": w_drain_defaults,
    "drain_tenants": w_drain_tenants,
    "latency": w_latency,
    "scheduled": w_scheduled,
    "history": w_history,
    "scale_out": w_scale_out,
}


# -- report ------------------------------------------------------------------------------------
def machine_facts(dsn: str) -> dict[str, str]:
    facts = {
        "cpu cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _mem_total(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        facts["postgresql"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        for name in (
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "wal_level",
            "max_connections",
            "work_mem",
        ):
            facts[name] = str(
                conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
            )  # type: ignore[index]
    facts["worker settings"] = json.dumps(RECOMMENDED)
    facts["tuned settings (drain_defaults)"] = json.dumps(TUNED)
    facts["load average at start"] = LOAD_AT_START
    facts["load average at end"] = _loadavg()
    return facts


def _loadavg() -> str:
    """The machine is often shared: the load next to the figures says how much."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


LOAD_AT_START = _loadavg()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_total() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) // 1024} MiB"
    return "?"


def targets(bench: Bench) -> list[tuple[str, str, str, bool | None]]:
    """(target, figure, ratio/verdict text, met) rows."""
    v = bench.value
    rows: list[tuple[str, str, str, bool | None]] = []

    def add(
        name: str, figure: float | None, goal: float, unit: str, higher: bool, base: str = ""
    ) -> None:
        if figure is None:
            rows.append((name, "-", "not measured", None))
            return
        met = figure >= goal if higher else figure < goal
        ratio = figure / goal if goal else float("inf")
        rows.append((name, f"{figure:,.3g} {unit}{base}", f"{ratio:.2f} x target", met))

    pgb = bench.mean("pgbench_simple_update", "tps")
    # The INSERT baseline run in rounds alternating with enqueue-single (same load), else
    # the standalone one.
    ins = v("enqueue_single", "paired_insert_tps") or bench.mean("pgbench_single_insert", "tps")
    drain = v("drain", "jobs_per_s")
    for label, what in (
        ("drain", "drain (one tenant)"),
        ("drain_tenants_fair", f"drain, {DRAIN_TENANTS} tenants, fair claiming on (default)"),
        ("drain_tenants_unfair", f"drain, {DRAIN_TENANTS} tenants, fair claiming off"),
    ):
        jobs = v(label, "jobs_per_s")
        if jobs is not None and pgb:
            add(
                f"{what} >= 3 x pgbench -N TPS",
                jobs / pgb,
                3.0,
                "x pgbench",
                True,
                f" ({jobs:,.0f} jobs/s vs {pgb:,.0f} tps)",
            )
    add("drain worker peak RSS <= 50 MiB", v("drain", "worker_peak_rss"), 50.01, "MiB", False)
    add("drain PostgreSQL CPU <= 80 us/job", v("drain", "pg_cpu_per_job"), 80.01, "us/job", False)
    single = v("enqueue_single", "jobs_per_s")
    paired = v("enqueue_single", "ratio_vs_pgbench_insert")
    if single is not None and ins:
        add(
            "enqueue-single >= 0.65 x one-client INSERT TPS",
            paired if paired is not None else single / ins,
            0.65,
            "x INSERT",
            True,
            f" ({single:,.0f} jobs/s vs {ins:,.0f} tps)",
        )
    add("enqueue-batch >= 150k jobs/s", v("enqueue_batch", "jobs_per_s"), 150_000, "jobs/s", True)
    floor = v("latency", "floor_p99")
    add(
        "latency p99 <= 4 ms",
        v("latency", "p99"),
        4.001,
        "ms",
        False,
        f" (the machine's floor, a bare LISTEN/NOTIFY queue: {floor:.2f} ms)" if floor else "",
    )
    add("scheduled lag p99 <= 5 ms", v("scheduled", "lag_p99"), 5.001, "ms", False)
    defaults = v("drain_defaults", "ratio_vs_tuned")
    if defaults is not None:
        add(
            "drain with default settings >= 0.8 x tuned (same run)",
            defaults,
            0.8,
            "x tuned",
            True,
            f" ({v('drain_defaults', 'jobs_per_s'):,.0f} vs "
            f"{v('drain_tuned', 'jobs_per_s'):,.0f} jobs/s, medians)",
        )
    hist = v("drain_history", "jobs_per_s")
    if hist is not None and drain:
        add(
            "history drain >= 0.9 x empty drain",
            hist / drain,
            0.9,
            "x empty",
            True,
            f" ({hist:,.0f} vs {drain:,.0f} jobs/s)",
        )
    return rows


def write_results(
    bench: Bench, path: Path, facts: dict[str, str], mode: str, elapsed: float
) -> None:
    lines = [
        "# jobrunner benchmark results",
        "",
        f"Written by `python bench/run.py{' --smoke' if mode == 'smoke' else ''}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} ({mode} run, {elapsed:.0f} s). "
        "Each workload on a fresh database; see bench/README.md.",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts.items()],
        "",
        "## Targets (ratios within this run)",
        "",
        "| target | measured | measured / target | met |",
        "|---|---|---|---|",
    ]
    for name, figure, ratio, met in targets(bench):
        mark = "yes" if met else ("-" if met is None else "**no**")
        lines.append(f"| {name} | {figure} | {ratio} | {mark} |")
    lines += ["", "## All figures", "", "| workload | metric | value | unit |", "|---|---|---|---|"]
    for row in bench.figures:
        lines.append(f"| {row['workload']} | {row['metric']} | {row['value']:,} | {row['unit']} |")
    scale = [r for r in bench.figures if r["workload"] == "scale_out"]
    if scale:
        base = scale[0]["value"]
        lines += [
            "",
            "## Scale-out (drain, worker processes)",
            "",
            "| processes | jobs/s | vs 1 process |",
            "|---|---|---|",
        ]
        for row in scale:
            lines.append(
                f"| {row['processes']} | {row['value']:,.0f} | {row['value'] / base:.2f} x |"
            )
    if bench.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in bench.notes]]
    path.write_text("\n".join(lines) + "\n")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few hundred jobs (CI)")
    parser.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        help="server to create the scratch databases on (needs CREATEDB)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated workloads: " + ",".join(WORKLOADS)
    )
    parser.add_argument(
        "--results",
        default=None,
        help="Markdown summary path (default bench/RESULTS.md for a full run, none for smoke)",
    )
    parser.add_argument(
        "--settings", default="", help="JSON overriding the recommended worker settings"
    )
    args = parser.parse_args(argv)
    if args.settings:
        RECOMMENDED.update(json.loads(args.settings))
    sizes = SMOKE if args.smoke else FULL
    bench = Bench(args.dsn, sizes)
    chosen = [w.strip() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    t0 = time.perf_counter()
    for name in chosen:
        await WORKLOADS[name](bench)
    if "baselines" in chosen and len(chosen) > 1:
        # Again at the end: the ratios use the mean, so load drifting during the run cancels.
        await w_baselines(bench)
    elapsed = time.perf_counter() - t0
    results = args.results or (None if args.smoke else str(HERE / "RESULTS.md"))
    if results:
        write_results(
            bench,
            Path(results),
            machine_facts(args.dsn),
            "smoke" if args.smoke else "full",
            elapsed,
        )
    for name, figure, ratio, met in targets(bench):
        print(
            json.dumps({"target": name, "measured": figure, "ratio": ratio, "met": met}), flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
