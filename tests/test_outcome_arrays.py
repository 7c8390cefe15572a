"""The outcome statements' array literals (``_store.completed_params``) read back exactly.

The worker writes them itself instead of letting psycopg dump lists, so every value a handler
can produce -- quotes, backslashes, braces, commas, non-ASCII, ``NULL`` -- must survive
PostgreSQL's array parser unchanged.
"""

from __future__ import annotations

import math
import uuid

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrunner._queue._store import AttemptRef, CompletedAttempt, FailedAttempt
from jobrunner.backends.postgres._store import completed_params, failed_params

texts = st.none() | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    results=st.lists(texts, min_size=1, max_size=8),
    retry=st.lists(st.none() | finite, min_size=1, max_size=8),
    started=finite,
    duration=finite,
)
def test_outcome_arrays_read_back_exactly(
    jobrunner_dsn: str,
    results: list[str | None],
    retry: list[float | None],
    started: float,
    duration: float,
) -> None:
    refs = [AttemptRef(uuid.uuid4(), uuid.uuid4(), 2**62 - i) for i in range(len(results))]
    done = [CompletedAttempt(r, v, started, duration) for r, v in zip(refs, results, strict=True)]
    failed = [
        FailedAttempt(refs[i % len(refs)], '{"type": "E"}', v, started, duration)
        for i, v in enumerate(retry)
    ]
    with psycopg.connect(jobrunner_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT %(tenants)s::uuid[], %(job_ids)s::uuid[], %(tokens)s::bigint[],"
            " %(results)s::text[], %(started)s::float8[], %(durations)s::float8[]",
            completed_params(done, "w"),
        ).fetchone()
        assert row is not None
        assert list(row[0]) == [r.tenant for r in refs]
        assert list(row[1]) == [r.job_id for r in refs]
        assert list(row[2]) == [r.lease_token for r in refs]
        assert list(row[3]) == results
        assert all(math.isclose(v, started, rel_tol=0, abs_tol=0) for v in row[4])
        assert row[5] == [duration] * len(refs)
        back = conn.execute(
            "SELECT %(retry_in)s::float8[], %(errors)s::text[]", failed_params(failed, "w")
        ).fetchone()
        assert back is not None
        assert list(back[0]) == retry
        assert list(back[1]) == ['{"type": "E"}'] * len(retry)
