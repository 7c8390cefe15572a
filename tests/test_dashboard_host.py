"""The dashboard answers only for its own Host names (DNS rebinding, issue 13).

A page on ``attacker.example`` whose name is re-pointed at 127.0.0.1 reaches the dashboard as
same-origin and could read every tenant's jobs and post forms; its requests still say
``Host: attacker.example``. Those are refused with 400 before any route, auth hook or
handler runs. Served by a real uvicorn here so ``scope["server"]`` is what a deployment sees;
tests/dashboard/ repeats the attack from Chromium with a rebinding host-resolver rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from jobrunner import InvalidArgumentError, JobHandlerRegistry, JobStatus, RetryPolicy
from jobrunner.backends.postgres import PostgresJobRunner
from jobrunner.cli import main
from jobrunner.dashboard import create_app
from jobrunner.testing import running_worker

T1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
ATTACKER = "attacker.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1") -> Iterator[int]:
    """``app`` under a real uvicorn on a free port of ``host``, stopped on exit."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="host-check-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def jobs(runner: PostgresJobRunner, registry: JobHandlerRegistry) -> dict[str, uuid.UUID]:
    async def boom(ctx: Any, data: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    async def idle(ctx: Any, data: dict[str, Any]) -> None:
        return None

    registry.add("boom", boom, retry=RetryPolicy(max_attempts=1))
    registry.add("idle", idle)
    failed = (await runner.schedule_job("boom", {}, tenant=T1)).job_id
    async with running_worker(runner):
        await runner.wait_for_job(failed, tenant=T1, timeout=30)
    queued = (await runner.schedule_job("idle", {}, tenant=T1, queue="parked")).job_id
    return {"failed": failed, "queued": queued}


@contextlib.asynccontextmanager
async def http(port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
        yield client


def _routes(ids: dict[str, uuid.UUID]) -> list[tuple[str, str]]:
    return [
        ("GET", "/"),
        ("GET", "/jobs"),
        ("GET", f"/jobs/{T1}/{ids['failed']}"),
        ("GET", "/history"),
        ("GET", "/api/metrics"),
        ("GET", "/api/jobs"),
        ("GET", f"/api/jobs/{T1}/{ids['failed']}"),
        ("GET", "/static/dashboard.css"),
        ("GET", "/no-such-page"),
        ("POST", f"/jobs/{T1}/{ids['queued']}/cancel"),
        ("POST", f"/jobs/{T1}/{ids['failed']}/retry"),
        ("POST", "/history/clear"),
    ]


async def test_foreign_host_is_refused_on_every_route_before_anything_runs(
    runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]
) -> None:
    auth_calls: list[str] = []

    def auth(request: Any) -> str:
        auth_calls.append(request.url.path)
        return "admin"

    app = create_app(runner, auth=auth)
    with serving(app) as port:
        async with http(port) as client:
            # a valid CSRF pair fetched the way a rebinding page would, were it allowed
            page = await client.get("/history")
            assert page.status_code == 200
            auth_calls.clear()
            for method, path in _routes(jobs):
                response = await client.request(
                    method, path, headers={"Host": ATTACKER}, data={"scope": "all"}
                )
                assert response.status_code == 400, (method, path, response.status_code)
                assert "Invalid Host header" in response.text
                assert ATTACKER not in response.text  # nothing reflected
                assert response.headers["content-type"].startswith("text/plain")
                assert response.headers["x-frame-options"] == "DENY"
            for host in (f"{ATTACKER}:{port}", "127.0.0.1.attacker.example", "localhost.evil"):
                response = await client.get("/api/jobs", headers={"Host": host})
                assert response.status_code == 400, host
    assert auth_calls == []  # refused before the auth hook and every handler
    assert (await runner.get_job_status(jobs["queued"], tenant=T1)).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert (await runner.get_job_status(jobs["failed"], tenant=T1)).status is JobStatus.FAILED  # type: ignore[union-attr]
    assert (await runner.get_job_details(jobs["failed"], tenant=T1)) is not None


async def test_localhost_names_and_the_bound_address_are_allowed_by_default(
    runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]
) -> None:
    app = create_app(runner)
    with serving(app) as port:
        async with http(port) as client:
            for host in (
                f"127.0.0.1:{port}",
                "127.0.0.1",
                f"localhost:{port}",
                "localhost",
                "LOCALHOST.",
                f"[::1]:{port}",
                "[::1]",
            ):
                response = await client.get("/api/jobs", headers={"Host": host})
                assert response.status_code == 200, host
                assert str(jobs["failed"]) in response.text


async def test_allowed_hosts_option(runner: PostgresJobRunner, jobs: dict[str, uuid.UUID]) -> None:
    app = create_app(runner, allowed_hosts=["jobs.example.com", "ops.example.com:8443"])
    with serving(app) as port:
        async with http(port) as client:
            for host, status in (
                ("jobs.example.com", 200),
                (f"jobs.example.com:{port}", 200),  # no port in the entry: any port
                ("ops.example.com:8443", 200),
                ("ops.example.com:9000", 400),
                ("ops.example.com", 400),  # http's default port 80 is not 8443
                (f"localhost:{port}", 200),  # the defaults stay allowed
                (ATTACKER, 400),
                ("sub.jobs.example.com", 400),
            ):
                response = await client.get("/api/metrics", headers={"Host": host})
                assert response.status_code == status, host
    anyone = create_app(runner, allowed_hosts=["*"])
    with serving(anyone) as port:
        async with http(port) as client:
            response = await client.get("/api/metrics", headers={"Host": ATTACKER})
            assert response.status_code == 200


async def test_a_request_without_a_host_header_is_refused(runner: PostgresJobRunner) -> None:
    with serving(create_app(runner)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/metrics HTTP/1.0\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"400"


@pytest.mark.parametrize(
    "bad", ["", "a b", "http://x", "x/y", "x:99999999", "[::1", 5, "*.example.com"]
)
def test_malformed_allowed_hosts_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="allowed host"):
        create_app(None, allowed_hosts=[bad])


def test_cli_allowed_host_option_and_environment(
    jobrunner_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    asyncio.run(PostgresJobRunner(jobrunner_dsn, schema=schema).migrate())
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", jobrunner_dsn)
    monkeypatch.setenv("JOB_RUNNER_TYPE", "postgres")
    monkeypatch.setenv("JOBRUNNER_DASHBOARD_ALLOWED_HOSTS", "env.example, env2.example")
    args = ["dashboard", "--schema", schema]
    assert main([*args, "--allowed-host", "a.example", "--allowed-host", "b.example:81"]) == 0
    assert main(args) == 0  # the environment's list when no option is given
    assert main([*args, "--host", "0.0.0.0", "--port", "8081"]) == 0
    assert main([*args, "--allowed-host", "bad host"]) == 2

    def statuses(app: Any, hosts: list[str]) -> list[int]:
        async def go() -> list[int]:
            found = []
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                for host in hosts:
                    found.append(
                        (await c.get("/static/dashboard.css", headers={"Host": host})).status_code
                    )
            return found

        return asyncio.run(go())

    hosts = ["a.example", "b.example:81", "b.example", "env.example", "localhost:8080", ATTACKER]
    assert statuses(served[0], hosts) == [200, 200, 400, 400, 200, 400]
    assert statuses(served[1], hosts) == [400, 400, 400, 200, 200, 400]
    assert statuses(served[2], ["env.example:8081", ATTACKER]) == [200, 400]
