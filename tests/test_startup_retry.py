"""Start-up survives a database that is not there yet: connecting and migrating are retried
with backoff (tenacity) up to a bound; what waiting cannot fix fails at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from jobrunner import JobHandlerRegistry, UnavailableError
from jobrunner._db._migrate import is_transient
from jobrunner.backends.postgres import PostgresJobRunner


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dsn_via(dsn: str, port: int) -> str:
    return psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=str(port))


class _RetryLog(logging.Handler):
    """Counts the start-up retry warnings and lets a test await the first one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.count += 1
            self.first.set()


@contextlib.contextmanager
def retry_log() -> Iterator[_RetryLog]:
    handler = _RetryLog()
    logger = logging.getLogger("jobrunner.migrate")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_nothing_listening_raises_unavailable_after_the_bound(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    runner = PostgresJobRunner(
        _dsn_via(jobrunner_dsn, _free_port()), schema=schema, registry=registry, pool_size=1
    )
    with (
        retry_log() as log,
        pytest.raises(UnavailableError, match=r"after retrying for 0\.5 s") as info,
    ):
        await runner.start(timeout=0.5)
    assert log.count >= 1  # it retried before giving up
    assert isinstance(info.value.__cause__, UnavailableError)
    await runner.close()


async def test_unknown_database_fails_at_once(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    dsn = psycopg.conninfo.make_conninfo(jobrunner_dsn, dbname="jobrunner_no_such_database")
    runner = PostgresJobRunner(dsn, schema=schema, registry=registry, pool_size=1)
    with retry_log() as log, pytest.raises(UnavailableError, match="does not exist") as info:
        await runner.start(timeout=30)
    assert log.count == 0
    assert not is_transient(info.value)
    await runner.close()


@contextlib.asynccontextmanager
async def _proxy(port: int, dsn: str) -> AsyncIterator[None]:
    """Start accepting on ``port`` and forward each connection to the real server."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host") or "127.0.0.1")
    target_port = int(params.get("port") or 5432)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    writers: list[asyncio.StreamWriter] = []

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        writers.append(client_w)
        if host.startswith("/"):
            server_r, server_w = await asyncio.open_unix_connection(
                f"{host}/.s.PGSQL.{target_port}"
            )
        else:
            server_r, server_w = await asyncio.open_connection(host, target_port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_a_server_that_comes_up_during_the_wait_is_joined(
    jobrunner_dsn: str, schema: str, registry: JobHandlerRegistry
) -> None:
    port = _free_port()
    registry.add("late", lambda ctx, data: None)
    runner = PostgresJobRunner(
        _dsn_via(jobrunner_dsn, port), schema=schema, registry=registry, pool_size=1
    )
    with retry_log() as log:
        starting = asyncio.create_task(runner.start(timeout=30))
        await log.first.wait()  # refused at least once: the database is "restarting"
        assert not starting.done()
        async with _proxy(port, jobrunner_dsn):
            await starting
            handle = await runner.schedule_job("late", {})
            info = await runner.get_job_status(handle.job_id)
            assert info is not None
            await runner.close()
