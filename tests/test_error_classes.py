"""Driver errors at the boundary: an outage or conflict is UnavailableError (retry later); a
statement that can never succeed is DatabaseError (retrying it would loop forever). Real
PostgreSQL errors, provoked on purpose."""

from __future__ import annotations

import psycopg
import pytest

from jobrunner import DatabaseError, UnavailableError
from jobrunner._db._errors import is_transient, translate_errors

CASES = [
    # (statement, expected error, why)
    ("SELECT 1 / 0", DatabaseError, "22012 division by zero: the same every time"),
    ("SELECT '\"\\ud800\"'::jsonb", DatabaseError, "22P02 lone surrogate in jsonb"),
    ("SELECT 'infinity'::timestamptz + interval '1e300 seconds'", DatabaseError, "22008"),
    ("SELECT repeat('x', 1100000000)", DatabaseError, "54000 program limit exceeded"),
    (
        "SET LOCAL statement_timeout = 1; SELECT pg_sleep(1)",
        UnavailableError,
        "57014 query canceled: may succeed later",
    ),
]


@pytest.mark.parametrize(("statement", "expected", "why"), CASES, ids=[c[2] for c in CASES])
def test_postgres_errors_are_classified(
    jobrunner_dsn: str, statement: str, expected: type[Exception], why: str
) -> None:
    def run(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        with translate_errors(), conn.transaction():
            for part in statement.split("; "):
                conn.execute(part)  # type: ignore[call-overload]

    with psycopg.connect(jobrunner_dsn) as conn, pytest.raises(expected) as info:
        run(conn)
    assert isinstance(info.value.__cause__, psycopg.Error), why


def test_a_lost_connection_is_an_outage(jobrunner_dsn: str) -> None:
    with psycopg.connect(jobrunner_dsn, autocommit=True) as victim:
        pid = victim.info.backend_pid
        with psycopg.connect(jobrunner_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(UnavailableError), translate_errors():
            victim.execute("SELECT 1")


def test_lock_and_serialisation_conflicts_are_transient() -> None:
    for state in ("55P03", "40001", "40P01", "53300", "57P01", "08006"):
        exc = psycopg.errors.lookup(state)("conflict")
        assert is_transient(exc), state
    for state in ("22012", "23505", "54000", "53400", "42P01"):
        exc = psycopg.errors.lookup(state)("permanent")
        assert not is_transient(exc), state
