"""Finding a PostgreSQL to test against, and per-test schemas."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
from psycopg import sql

from jobrunner._db._queries import fragment
from jobrunner._embedded import EmbeddedPostgres

logger = logging.getLogger("jobrunner.testing")

LOCAL_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/postgres",
)


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute(fragment("ping"))
        return True
    except psycopg.Error:
        return False


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no Docker
        return False


@contextlib.contextmanager
def find_test_dsn(explicit: str | None = None) -> Iterator[str]:
    """Yield a PostgreSQL DSN for tests, starting one if needed; stops it afterwards.

    Order: ``explicit`` or ``JOBRUNNER_TEST_DSN``; a server on 127.0.0.1:5432; a testcontainers
    PostgreSQL when a Docker daemon answers; a private cluster from system binaries or pgserver.
    """
    dsn = explicit or os.environ.get("JOBRUNNER_TEST_DSN")
    if dsn:
        yield dsn
        return
    for candidate in LOCAL_CANDIDATES:
        if _answers(candidate):
            yield candidate
            return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
            return
    with EmbeddedPostgres() as pg:
        yield pg.dsn


@contextlib.asynccontextmanager
async def isolated_schema(dsn: str, prefix: str = "jrt") -> AsyncIterator[str]:
    """A fresh schema name, dropped (with everything in it) on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
