"""The documented bounds of every value jobrunner accepts (docs/reference/configuration.md,
"Limits"): data only, so any module can use them without importing the checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

MAX_PAYLOAD_BYTES: Final = 1_048_576
"""Largest job payload (``data``, ``metadata``) as serialised JSON: 1 MiB in UTF-8."""

MAX_BULK_PAYLOAD_BYTES: Final = 256 * 1_048_576
"""Largest total of the payloads of one bulk enqueue (``schedule_jobs``): 256 MiB.

PostgreSQL refuses any single value or message over 1 GB; a bulk batch travels as one
parameter, so a total well under that keeps every batch writable."""

MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
"""Largest handler or durable step result stored, as UTF-8 JSON: 64 MiB (PostgreSQL's own
jsonb limit is about 255 MiB)."""

MAX_NAME_LENGTH: Final = 200
"""Longest job name, in characters."""

MAX_KEY_LENGTH: Final = 500
"""Longest singleton key or queue name, in characters."""

MAX_REASON_LENGTH: Final = 2_000
"""Longest cancel ``reason`` / ``cancelled_by`` (and other free text stored with a job)."""

MAX_LIST_LIMIT: Final = 500
"""Most jobs one ``list_jobs`` page returns."""

MAX_SEARCH_LENGTH: Final = 200
"""Longest ``list_jobs`` search text (name and other filters: the same)."""

MIN_TIMESTAMP: Final = datetime(1, 1, 2, tzinfo=UTC)
"""Earliest accepted datetime (as a UTC instant): 0001-01-02.

PostgreSQL stores far earlier and later timestamps than Python can represent (years 1 to
9999); a value within a day of those ends could still not be read back in a session whose
time zone shifts it past them, so one day is kept free at each end."""

MAX_TIMESTAMP: Final = datetime(9999, 12, 30, 23, 59, 59, 999_999, tzinfo=UTC)
"""Latest accepted datetime (as a UTC instant): 9999-12-30 23:59:59.999999."""

MAX_ATTEMPTS: Final = 1_000_000
"""Largest ``RetryPolicy.max_attempts`` (stored in an ``INTEGER`` column)."""

MAX_INTERVAL_SECONDS: Final = 10 * 365 * 86_400.0
"""Longest retry interval or ``Retry`` delay: ten years (315,360,000 s), so a next run time
computed from it is always a valid timestamp."""

MAX_TIMEOUT_SECONDS: Final = 10 * 365 * 86_400.0
"""Longest handler timeout or wait (``wait_for_job``, start-up): ten years."""

MAX_LEASE_SECONDS: Final = 86_400.0
"""Longest worker lease (``lease_seconds``, Temporal ``heartbeat_timeout``): one day."""

MAX_WORKER_INTERVAL_SECONDS: Final = 86_400.0
"""Longest other worker interval (poll, heartbeat, rescue, listen probe, flush, shutdown
grace) and ``wait_for_job`` poll interval: one day."""

MAX_WORKER_COUNT: Final = 100_000
"""Largest worker count option (``concurrency``, ``claim_batch``, ``flush_max``,
``sync_threads``)."""

MAX_HISTORY_AGE_SECONDS: Final = 36_500 * 86_400.0
"""Largest ``clear_history(older_than=...)``: 36,500 days (about a hundred years)."""

MAX_DEPENDENCIES: Final = 10_000
"""Most dependencies of one job (``depends_on``). A job waiting for more can wait for a
fan-in job that depends on a part of them."""
