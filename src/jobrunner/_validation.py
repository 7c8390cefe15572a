"""Checks at the API boundary: each returns a normalised value or raises InvalidArgumentError."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from jobrunner._errors import InvalidArgumentError

SYSTEM_TENANT = uuid.UUID("00000000-0000-0000-0000-000000000000")
SYSTEM_USER = SYSTEM_TENANT
#: Largest accepted job payload (serialised JSON), in bytes.
MAX_PAYLOAD_BYTES = 1_048_576
MAX_NAME_LENGTH = 200


def as_uuid(value: object, what: str) -> uuid.UUID:
    """Return ``value`` as a UUID; accept a UUID or its string form."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidArgumentError(f"{what} must be a UUID or its string form, got {value!r:.80}")


def as_tenant(value: object | None) -> uuid.UUID:
    """Normalise a tenant argument; ``None`` means the system tenant."""
    return SYSTEM_TENANT if value is None else as_uuid(value, "tenant")


def as_job_name(value: object) -> str:
    """Validate a job name: a non-empty printable string of bounded length."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(
            f"job name must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
        )
    if not value.isprintable():
        raise InvalidArgumentError("job name must be printable")
    return value


def as_json_text(value: object, what: str = "data") -> str:
    """Serialise ``value`` to JSON text, rejecting what JSON cannot hold or is too large."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"{what} must be JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise InvalidArgumentError(f"{what} exceeds the {MAX_PAYLOAD_BYTES} byte limit")
    if "\\u0000" in text:
        raise InvalidArgumentError(f"{what} must not contain NUL characters")
    return text


def as_data(value: object, what: str = "data") -> dict[str, Any]:
    """Validate a job payload: a JSON object (``None`` becomes ``{}``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{what} must be a mapping (JSON object)")
    as_json_text(value, what)
    return dict(value)


def as_aware_datetime(value: object, what: str = "run_at") -> datetime:
    """Require a timezone-aware datetime."""
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(f"{what} must be timezone-aware (naive datetimes are ambiguous)")
    return value


def as_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """Accept seconds (int/float) or a timedelta; return positive seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgumentError(f"{what} must be seconds or a timedelta, got {value!r:.80}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidArgumentError(f"{what} must be finite")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidArgumentError(f"{what} must be positive")
    return seconds


def as_priority(value: object) -> int:
    """Priorities are integers in the PostgreSQL smallint range; higher runs first."""
    if not isinstance(value, int) or isinstance(value, bool) or not -32768 <= value <= 32767:
        raise InvalidArgumentError("priority must be an integer between -32768 and 32767")
    return value


def as_optional_key(value: object, what: str) -> str | None:
    """Validate an optional short string key (singleton keys, queue names)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 500 or not value.isprintable():
        raise InvalidArgumentError(f"{what} must be a non-empty printable string")
    return value


def as_queue(value: object) -> str:
    """Validate a queue name."""
    queue = as_optional_key(value, "queue")
    if queue is None:
        raise InvalidArgumentError("queue must be a non-empty printable string")
    if queue.startswith("probe:"):
        # Workers' listener health probes use NOTIFY payloads with this prefix.
        raise InvalidArgumentError("queue names must not start with 'probe:'")
    return queue
