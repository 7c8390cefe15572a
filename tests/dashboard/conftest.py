"""Real-browser fixtures: Chromium, a uvicorn server with the dashboard, a worker, jobs.

Everything here is module-scoped and synchronous (Playwright's sync API) so that one browser,
one server and one data set serve the whole suite; the async runner and its worker live on a
private event loop (SyncJobRunner's), the server on uvicorn's own loop in another thread.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobrunner import JobHandlerRegistry, JobStatus, RetryPolicy, SyncJobRunner
from jobrunner.backends.postgres import PostgresJobRunner

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
T1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
T2 = uuid.UUID("22222222-2222-2222-2222-222222222222")
XSS = '<script>window.__pwned = true</script><img src=x onerror="window.__pwned=true">'
PARKED = "parked"  # a queue no worker consumes: its jobs stay queued


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome"]


def _system_chromium() -> str | None:
    """A Chromium installed on the system: /usr/bin/chromium, else one on PATH."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _apt_install_chromium() -> None:
    """As root on Debian/Ubuntu: install the distribution's Chromium (about a minute, once)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    subprocess.run(install, check=False, capture_output=True, timeout=900, env=env)
    if _system_chromium() is None:
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, timeout=600)
        subprocess.run(install, check=False, capture_output=True, timeout=900, env=env)


def _playwright_install_chromium() -> str | None:
    """Download Playwright's own Chromium (a laptop without a system browser or root).

    Returns None when it worked, else what went wrong.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "playwright", "install", "chromium"],
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).strip()[-2000:] or f"exit status {proc.returncode}"
    return None


def _ensure_chromium() -> str | None:
    """The browser for the suite: a system Chromium's path, or None for Playwright's own.

    In order: /usr/bin/chromium or chromium / chromium-browser / google-chrome on PATH; as root
    with apt-get, the distribution's package; else ``python -m playwright install chromium``.
    """
    path = _system_chromium()
    if path is not None:
        return path
    tried = [f"{CHROMIUM} and {', '.join(CHROMIUM_NAMES)} on PATH: not found"]
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install_chromium()
        path = _system_chromium()
        if path is not None:
            return path
        tried.append("apt-get install chromium: did not install it")
    problem = _playwright_install_chromium()
    if problem is None:
        return None
    tried.append(f"python -m playwright install chromium: {problem}")
    pytest.fail(
        "the browser tests need Chromium; tried:\n  "
        + "\n  ".join(tried)
        + "\nInstall Chromium (e.g. `apt-get install -y chromium` as root) or run "
        "`python -m playwright install chromium`.",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = _ensure_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # executable_path=None: Playwright's own Chromium (from `playwright install`).
        chromium = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _registry() -> JobHandlerRegistry:
    registry = JobHandlerRegistry()

    async def ok(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
        async with ctx.step("prepare") as step:
            step.result = {"items": 3}
        await ctx.set_progress(100, "done")
        return {"sent": True}

    async def boom(ctx: Any, data: dict[str, Any]) -> None:
        async with ctx.step("call upstream"):
            raise ValueError(f"upstream refused: {data.get('why', '')}")

    async def slow(ctx: Any, data: dict[str, Any]) -> None:
        await ctx.set_progress(40, "halfway")
        await asyncio.Event().wait()  # runs until cancelled

    registry.add("send_email", ok)
    registry.add("sync_calendar", ok)
    registry.add("generate_invoice", boom, retry=RetryPolicy(max_attempts=1))
    registry.add("long_export", slow, timeout=600)
    return registry


@dataclass
class Site:
    """The running dashboard and the data behind it."""

    url: str
    runner: SyncJobRunner
    ids: dict[str, uuid.UUID] = field(default_factory=dict)

    def status(self, key: str, tenant: uuid.UUID = T1) -> JobStatus | None:
        info = self.runner.get_job_status(self.ids[key], tenant=tenant)
        return None if info is None else info.status

    def wait_status(self, key: str, wanted: JobStatus, timeout: float = 30.0) -> None:
        # No event exists for "a worker claimed it": poll the row with a deadline.
        deadline = time.monotonic() + timeout
        while self.status(key) is not wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"{key} never became {wanted.value}: {self.status(key)}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def site(jobrunner_dsn: str) -> Iterator[Site]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from jobrunner.dashboard import create_app

    schema = f"jrt_dash_{uuid.uuid4().hex[:10]}"
    registry = _registry()
    runner = SyncJobRunner(PostgresJobRunner(jobrunner_dsn, schema=schema, registry=registry))
    inner = runner.runner
    worker = inner.create_worker(concurrency=4, queues=["default"])

    async def start_worker() -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(worker.run())
        await asyncio.wait_for(worker.started.wait(), 30)
        return task

    worker_task = runner._call(start_worker())
    site = Site(url="", runner=runner)
    try:
        _make_jobs(site)

        # The dashboard's own runner (unstarted: it opens its pool in uvicorn's loop).
        def dash_runner() -> PostgresJobRunner:
            return PostgresJobRunner(
                jobrunner_dsn, schema=schema, registry=registry, auto_migrate=False, pool_size=4
            )

        shared = dash_runner()
        host = Starlette(
            routes=[
                Mount(
                    "/t1",
                    app=create_app(
                        shared, tenant=T1, refresh_seconds=0.5, title="jobrunner · tenant view"
                    ),
                ),
                Mount("/", app=create_app(shared, refresh_seconds=0.5)),
            ]
        )
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, name="dashboard-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        site.url = f"http://127.0.0.1:{port}"
        try:
            yield site
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    finally:

        async def stop_worker() -> None:
            await worker.stop(grace=0)
            await worker_task

        runner._call(stop_worker())
        runner.close()
        with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _make_jobs(site: Site) -> None:
    r = site.runner
    ids = site.ids
    for i in range(4):
        ids[f"email{i}"] = r.schedule_job(
            "send_email", {"to": f"user{i}@example.com"}, tenant=T1, metadata={"batch": i}
        ).job_id
    ids["calendar"] = r.schedule_job("sync_calendar", {"account": 42}, tenant=T1).job_id
    ids["invoice"] = r.schedule_job(
        "generate_invoice", {"invoice": 1001, "why": "rate limited"}, tenant=T1
    ).job_id
    ids["xss"] = r.schedule_job(
        "generate_invoice", {"why": XSS, "note": XSS}, tenant=T1, metadata={"html": XSS}
    ).job_id
    ids["other_tenant"] = r.schedule_job(
        "generate_invoice", {"why": "tenant two secret"}, tenant=T2
    ).job_id
    ids["to_retry"] = r.schedule_job("generate_invoice", {"why": "flaky"}, tenant=T1).job_id
    for key in ("email0", "email1", "email2", "email3", "calendar", "invoice", "xss", "to_retry"):
        r.wait_for_job(ids[key], tenant=T1, timeout=60)
    r.wait_for_job(ids["other_tenant"], tenant=T2, timeout=60)
    ids["slow"] = r.schedule_job("long_export", {"rows": 10_000}, tenant=T1).job_id
    ids["parked"] = r.schedule_job("send_email", {"to": "later"}, tenant=T1, queue=PARKED).job_id
    site.wait_status("slow", JobStatus.PROCESSING)
