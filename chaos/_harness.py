"""The machinery the scenarios share: a fresh schema with a ledger, worker processes, faults,
and the report that counts lost and duplicated jobs from the database alone."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
LIVE = ("pending", "queued", "processing", "retrying")
#: Seconds a statement sent just before a kill may take to begin on a loaded server.
IN_FLIGHT = 5.0
_BANNER = re.compile(r"jobrunner worker ([0-9a-f-]{36}) starting")


@dataclass
class Fault:
    """One injected fault. ``pid`` is the worker process it hit (None: the whole database)."""

    kind: str
    at: float
    until: float | None = None
    pid: int | None = None
    affected: list[str] = field(default_factory=list)
    """Jobs the fault interrupted (held by the process, or running anywhere for DB faults)."""


@dataclass
class WorkerProc:
    """A worker subprocess and its log."""

    popen: subprocess.Popen[bytes]
    log: Path
    started_at: float
    worker_id: str | None = None
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def read_worker_id(self) -> str | None:
        """The worker id from the startup banner (None until it has logged it)."""
        if self.worker_id is None and self.log.exists():
            match = _BANNER.search(self.log.read_text(errors="replace"))
            if match:
                self.worker_id = match[1]
        return self.worker_id

    def alive(self) -> bool:
        return self.popen.poll() is None


class Scenario:
    """A fresh schema on ``dsn`` with a ledger table, worker processes and a fault log.

    Args:
        name: Scenario name (report key).
        dsn: Database to use; a fresh schema is created and dropped.
        lease: Lease seconds given to the workers.
        seed: Random seed (job durations, kill choices).
    """

    def __init__(self, name: str, dsn: str, *, lease: float = 3.0, seed: int = 1) -> None:
        self.name = name
        self.dsn = dsn
        self.lease = lease
        self.schema = f"chaos_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        self.rand = random.Random(seed)
        self.workers: list[WorkerProc] = []
        self.faults: list[Fault] = []
        self.enqueued = 0
        self.notes: dict[str, Any] = {}
        self.started = time.time()
        self._dir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
        #: Extra environment of the worker processes (e.g. the Temporal backend's settings).
        self.extra_env: dict[str, str] = {}
        #: Builds the (not yet started) runner that enqueues; default: PostgreSQL.
        self.runner_factory: Any = None
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    # -- database ---------------------------------------------------------------------------
    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        """The harness's own connection (reconnects after a database restart)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self.dsn, autocommit=True, row_factory=dict_row, application_name="chaos-harness"
            )
        return self._conn

    def q(self, text: str, params: Any = None) -> list[dict[str, Any]]:
        """Run ``text`` ({s} is the schema) and return its rows."""
        query = sql.SQL(text).format(s=sql.Identifier(self.schema))
        for attempt in range(30):
            try:
                cur = self.conn().execute(query, params)
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if attempt == 29:
                    raise
                time.sleep(0.2)  # database restarting: wait for it, there is no event
        return []

    def setup(self) -> None:
        """Create the schema (jobrunner migrations) and the ledger table."""
        import asyncio

        import chaos.app  # noqa: F401 - the registry must know the handler's retry policy
        from jobrunner._db._database import Database

        asyncio.run(Database(self.dsn, schema=self.schema).migrate())
        self.q(
            "CREATE TABLE {s}.chaos_ledger (id bigserial PRIMARY KEY, job_id uuid NOT NULL,"
            " token bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL, worker_id uuid,"
            " phase text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )

    def drop(self) -> None:
        """Drop the schema and close the harness connection."""
        with contextlib.suppress(psycopg.Error):
            self.q("DROP SCHEMA IF EXISTS {s} CASCADE")
        if self._conn is not None:
            self._conn.close()

    def enqueue(self, count: int, ms: tuple[int, int] = (10, 50)) -> None:
        """Enqueue ``count`` ``chaos.work`` jobs lasting ``ms`` milliseconds each (uniform)."""
        from jobrunner import SyncJobRunner
        from jobrunner.backends.postgres import PostgresJobRunner

        payloads = [{"ms": self.rand.randint(*ms)} for _ in range(count)]
        if self.runner_factory is not None:
            runner = SyncJobRunner(self.runner_factory())
        else:
            runner = SyncJobRunner(
                PostgresJobRunner(self.dsn, schema=self.schema, pool_size=2, auto_migrate=False)
            )
        try:
            runner.schedule_jobs("chaos.work", payloads)
        finally:
            runner.close()
        self.enqueued += count

    def live_count(self) -> int:
        rows = self.q(
            "SELECT count(*) AS n FROM {s}.jobs WHERE status = ANY(%s::text[]::{s}.job_status[])",
            (list(LIVE),),
        )
        return int(rows[0]["n"])

    def done_count(self) -> int:
        rows = self.q("SELECT count(*) AS n FROM {s}.jobs WHERE status = 'completed'")
        return int(rows[0]["n"])

    def processing(self, worker_id: str | None = None) -> list[str]:
        """Ids of jobs being processed (by ``worker_id`` when given)."""
        if worker_id is None:
            rows = self.q("SELECT job_id FROM {s}.jobs WHERE status = 'processing'")
        else:
            rows = self.q(
                "SELECT job_id FROM {s}.jobs WHERE status = 'processing' AND worker_id = %s",
                (worker_id,),
            )
        return [str(r["job_id"]) for r in rows]

    def wait_until(self, predicate: Any, timeout: float, step: float = 0.1) -> bool:
        """Poll a database condition until true or ``timeout`` (no event exists for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(step)
        return bool(predicate())

    def wait_all_final(self, timeout: float) -> bool:
        """Wait until no job is live; False when ``timeout`` passed first."""
        return self.wait_until(lambda: self.live_count() == 0, timeout, step=0.25)

    # -- workers ----------------------------------------------------------------------------
    def env(self, dsn: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(
            JOBRUNNER_DATABASE_URL=dsn or self.dsn,
            JOBRUNNER_SCHEMA=self.schema,
            JOBRUNNER_AUTO_MIGRATE="false",
            PGAPPNAME=f"chaos-worker-{self.schema}",
            PYTHONPATH=os.pathsep.join(
                p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
            ),
        )
        return env

    def spawn(self, *, cli: bool = True, concurrency: int = 20, **options: float) -> WorkerProc:
        """Start a worker process: the real CLI (``jobrunner worker``) or ``chaos.worker``."""
        log = self._dir / f"worker-{len(self.workers)}.log"
        if cli:
            cmd = [
                sys.executable,
                "-m",
                "jobrunner.cli",
                "worker",
                "--app",
                "chaos.app",
                "--concurrency",
                str(concurrency),
                "--lease",
                str(self.lease),
            ]
            if "grace" in options:
                cmd += ["--grace", str(options["grace"])]
        else:
            cmd = [
                sys.executable,
                "-m",
                "chaos.worker",
                "--concurrency",
                str(concurrency),
                "--lease",
                str(self.lease),
            ]
            for key, value in options.items():
                cmd += [f"--{key}", str(value)]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        proc = WorkerProc(popen, log, time.time())
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.alive()]

    def wait_worker_ready(self, proc: WorkerProc, timeout: float = 60.0) -> bool:
        """Wait for the startup banner (the worker then claims at once)."""
        return self.wait_until(
            lambda: proc.read_worker_id() is not None or not proc.alive(), timeout, step=0.05
        )

    def kill(self, proc: WorkerProc, sig: int = signal.SIGKILL) -> Fault:
        """Send ``sig`` to a worker and record the jobs it held at that moment."""
        worker_id = proc.read_worker_id()
        before = set(self.processing(worker_id)) if worker_id else set()
        os.kill(proc.pid, sig)
        at = time.time()  # after the signal: the process runs no more code from here on
        kind = {signal.SIGKILL: "kill", signal.SIGSTOP: "sigstop", signal.SIGTERM: "sigterm"}[sig]
        if sig == signal.SIGKILL:
            proc.popen.wait()
            # Dead now: what it still holds can only be rescued, never finished by it.
            held = set(self.processing(worker_id)) if worker_id else set()
        else:
            held = before
        fault = Fault(kind, at, pid=proc.pid, affected=sorted(held))
        self.faults.append(fault)
        return fault

    def stop_all(self, timeout: float = 60.0) -> None:
        """SIGTERM every live worker and wait for it (then SIGKILL)."""
        for proc in self.live_workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.popen.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.workers:
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                proc.exit_code = proc.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.exit_code = proc.popen.wait()

    # -- report -----------------------------------------------------------------------------
    def report(self, *, finished: bool) -> dict[str, Any]:
        """Count lost, duplicated and fenced outcomes from the jobs table and the ledger."""
        jobs = {
            str(r["job_id"]): r
            for r in self.q(
                "SELECT job_id, status, lease_token, attempts, "
                "extract(epoch FROM completed_at)::float8 AS completed FROM {s}.jobs"
            )
        }
        ledger = self.q(
            "SELECT job_id, token, attempt, pid, worker_id, phase,"
            " extract(epoch FROM at)::float8 AS at FROM {s}.chaos_ledger ORDER BY id"
        )
        completions = self.q(
            "SELECT job_id, metadata ->> 'worker_id' AS worker_id, retry_count,"
            " extract(epoch FROM processed_at AT TIME ZONE 'UTC')::float8 AS at"
            " FROM {s}.job_details WHERE step_name = 'attempt' AND status = 'completed'"
        )
        pid_of = {w.read_worker_id(): w.pid for w in self.workers if w.read_worker_id()}
        starts: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        done_tokens: set[tuple[str, int]] = set()
        for row in ledger:
            key = str(row["job_id"])
            if row["phase"] == "start":
                starts[key][int(row["token"])] = row
            else:
                done_tokens.add((key, int(row["token"])))
        lost = [j for j, r in jobs.items() if r["status"] != "completed"]
        by_status: dict[str, int] = defaultdict(int)
        for r in jobs.values():
            by_status[str(r["status"])] += 1

        # Fencing: exactly one accepted completion per job, from the attempt holding the final
        # token, and never from a process after it was killed.
        kills = {f.pid: f.at for f in self.faults if f.kind == "kill"}
        accepted: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for c in completions:
            accepted[str(c["job_id"])].append(c)
        violations: list[dict[str, Any]] = []
        for job_id, r in jobs.items():
            rows = accepted.get(job_id, [])
            if r["status"] == "completed" and len(rows) != 1:
                violations.append({"job": job_id, "problem": f"{len(rows)} accepted completions"})
                continue
            if not rows:
                continue
            final = starts[job_id].get(int(r["lease_token"]))
            completer_pid = pid_of.get(rows[0]["worker_id"])
            if final is None:
                violations.append({"job": job_id, "problem": "completion without a run"})
            elif completer_pid is not None and final["pid"] != completer_pid:
                violations.append(
                    {
                        "job": job_id,
                        "problem": "completion from a superseded attempt",
                        "completer_pid": completer_pid,
                        "final_pid": final["pid"],
                    }
                )
            # A statement already sent when the process died still commits (its now() may
            # even be a little later, when the server gets to it); one that begins long after
            # the kill cannot come from that process.
            if completer_pid in kills and rows[0]["at"] > kills[completer_pid] + IN_FLIGHT:
                violations.append(
                    {"job": job_id, "problem": "completion long after its worker was killed"}
                )

        # Extra runs: every started attempt other than the final one needs a fault to explain it.
        explained: dict[str, int] = defaultdict(int)
        unexplained: list[dict[str, Any]] = []
        zombie_done = 0
        duplicated = 0
        overlapping = 0
        for job_id, tokens in starts.items():
            if len(tokens) > 1:
                duplicated += 1
            final_token = int(jobs[job_id]["lease_token"]) if job_id in jobs else -1
            ordered = sorted(tokens.items())
            for (tok, row), nxt in zip(ordered, [*ordered[1:], None], strict=True):
                if tok == final_token and jobs.get(job_id, {}).get("status") == "completed":
                    continue
                if (job_id, tok) in done_tokens:
                    zombie_done += 1
                    if nxt is not None and nxt[1]["at"] < row["at"] + 0.06:
                        overlapping += 1
                cause = self._explain(row)
                if cause:
                    explained[cause] += 1
                else:
                    unexplained.append(
                        {
                            "job": job_id,
                            "token": tok,
                            "pid": row["pid"],
                            "at": round(row["at"] - self.started, 3),
                        }
                    )
        extra = sum(len(t) - 1 for t in starts.values())
        total_runs = sum(len(t) for t in starts.values())
        recovery = self._recovery(jobs)
        report: dict[str, Any] = {
            "scenario": self.name,
            "finished": finished,
            "jobs": len(jobs),
            "completed": by_status.get("completed", 0),
            "lost": len(lost),
            "lost_examples": [{"job": j, "status": str(jobs[j]["status"])} for j in lost[:5]],
            "runs": total_runs,
            "jobs_run_more_than_once": duplicated,
            "extra_runs": extra,
            "extra_runs_explained": dict(explained),
            "extra_runs_unexplained": len(unexplained),
            "unexplained_examples": unexplained[:5],
            "superseded_attempts_that_finished_their_work": zombie_done,
            "fencing_violations": len(violations),
            "fencing_examples": violations[:5],
            "faults": {
                k: sum(1 for f in self.faults if f.kind == k)
                for k in sorted({f.kind for f in self.faults})
            },
            "recovery_s": recovery,
            "duration_s": round(time.time() - self.started, 1),
            "worker_exit_codes": sorted(
                {w.exit_code for w in self.workers if w.exit_code is not None}
            ),
        }
        report.update(self.notes)
        return report

    def _explain(self, row: dict[str, Any]) -> str | None:
        started = float(row["at"])
        for fault in self.faults:
            if fault.pid is not None:
                if fault.pid != row["pid"]:
                    continue
                # A killed or terminated process ends there: every attempt it held is
                # explained. A frozen one only explains attempts begun before it resumed (the
                # ledger row may land a moment after the signal: allow a second of slack).
                if fault.kind != "sigstop" or started <= (fault.until or fault.at) + 1.0:
                    return fault.kind
            else:
                end = fault.until or fault.at
                if fault.at - self.lease - 5 <= started <= end + 1:
                    return fault.kind
        return None

    def _recovery(self, jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Per fault that interrupted jobs: seconds until the last of them was re-queued by lease
        expiry (``requeued``; kills and freezes only) and until the last was completed
        elsewhere (``completed``: includes waiting behind the rest of the queue)."""
        rescued: dict[str, list[float]] = defaultdict(list)
        for row in self.q(
            "SELECT job_id, extract(epoch FROM processed_at AT TIME ZONE 'UTC')::float8 AS at"
            " FROM {s}.job_details WHERE step_name = 'attempt'"
            " AND (metadata ->> 'lease_expired')::boolean"
        ):
            rescued[str(row["job_id"])].append(float(row["at"]))
        completed: list[float] = []
        requeued: list[float] = []
        unrecovered = 0
        for fault in self.faults:
            if not fault.affected:
                continue
            ends = [jobs[j]["completed"] for j in fault.affected if j in jobs]
            if any(e is None for e in ends):
                unrecovered += 1
                continue
            completed.append(max(ends) - fault.at)
            if fault.pid is not None:
                # Jobs whose outcome was already on its way when the fault hit were never
                # rescued; the others were, and the last of them sets the figure.
                firsts = [
                    min((t for t in rescued[j] if t >= fault.at - 0.01), default=None)
                    for j in fault.affected
                ]
                times = [t for t in firsts if t is not None]
                if times:
                    requeued.append(max(times) - fault.at)

        def stats(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}

        return {
            "faults_with_interrupted_jobs": len(completed) + unrecovered,
            "unrecovered": unrecovered,
            "requeued": stats(requeued),
            "completed": stats(completed),
        }

    def worker_log_tail(self, lines: int = 20) -> str:
        out = []
        for w in self.workers:
            text = w.log.read_text(errors="replace").splitlines() if w.log.exists() else []
            out.append(f"--- worker pid {w.pid} exit {w.exit_code}")
            out.extend(text[-lines:])
        return "\n".join(out)


@contextlib.contextmanager
def scenario(name: str, dsn: str, **kwargs: Any) -> Iterator[Scenario]:
    """A set-up :class:`Scenario`; workers are stopped and the schema dropped on exit."""
    sc = Scenario(name, dsn, **kwargs)
    sc.setup()
    try:
        yield sc
    finally:
        sc.stop_all()
        if os.environ.get("CHAOS_KEEP") != "1":
            sc.drop()
