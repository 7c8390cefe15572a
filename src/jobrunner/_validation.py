"""Checks at every boundary (API, CLI, dashboard, worker options), in one place.

Each check returns a normalised value or raises :class:`InvalidArgumentError` naming the
field; nothing is written before every argument of a call passed. The bounds below are
documented in docs/reference/configuration.md ("Limits"); change them there too.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from jobrunner._errors import InvalidArgumentError
from jobrunner._limits import (
    MAX_BULK_PAYLOAD_BYTES,
    MAX_HISTORY_AGE_SECONDS,
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_REASON_LENGTH,
    MAX_TIMEOUT_SECONDS,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
)

SYSTEM_TENANT = uuid.UUID("00000000-0000-0000-0000-000000000000")
SYSTEM_USER = SYSTEM_TENANT


def check_text(value: str, what: str) -> str:
    """Refuse text PostgreSQL (and JSON in UTF-8) cannot hold: NUL and surrogate code points.

    A lone surrogate such as ``"\\ud800"`` (from ``surrogateescape``-decoded bytes, or a
    JSON ``"\\ud800"`` escape) is not valid Unicode; neither it nor NUL can be stored.
    """
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"{what} must be valid Unicode text (it holds a lone surrogate such as '\\ud800')"
            ) from None
    return value


def as_text(value: object, what: str, *, max_length: int, allow_empty: bool = True) -> str:
    """A string of at most ``max_length`` characters, free of NUL and surrogates."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidArgumentError(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidArgumentError(f"{what} must be at most {max_length} characters")
    return check_text(value, what)


def as_optional_text(
    value: object, what: str, *, max_length: int = MAX_REASON_LENGTH, allow_empty: bool = True
) -> str | None:
    """:func:`as_text`, with ``None`` passed through."""
    if value is None:
        return None
    return as_text(value, what, max_length=max_length, allow_empty=allow_empty)


def as_uuid(value: object, what: str) -> uuid.UUID:
    """Return ``value`` as a UUID; accept a UUID or its string form."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and len(value) <= 100:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidArgumentError(f"{what} must be a UUID or its string form, got {value!r:.80}")


def as_tenant(value: object | None) -> uuid.UUID:
    """Normalise a tenant argument; ``None`` means the system tenant."""
    return SYSTEM_TENANT if value is None else as_uuid(value, "tenant")


def as_job_name(value: object) -> str:
    """Validate a job name: a non-empty printable string of bounded length.

    Printable excludes NUL, control characters and surrogates.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(
            f"job name must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
        )
    if not value.isprintable():
        raise InvalidArgumentError(
            "job name must be printable (no NUL, control characters or lone surrogates)"
        )
    return value


# A JSON ``\u0000`` escape, i.e. preceded by an even number of backslashes (an escaped
# backslash followed by the text ``u0000`` is harmless).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


#: One encoder for every payload: ``json.dumps`` with options builds a new one per call,
#: which cost more than encoding a small payload (docs/performance.md).
_ENCODE = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def _encoded(value: object, what: str) -> tuple[str, bytes]:
    """``value`` as JSON text and its UTF-8 bytes, refusing what PostgreSQL's ``jsonb``
    cannot hold (see :func:`json_text_and_size`)."""
    try:
        text = _ENCODE(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"{what} must be JSON-serialisable: {exc}") from None
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"{what} must be valid Unicode text (a key or string holds a lone "
            "surrogate such as '\\ud800')"
        ) from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise InvalidArgumentError(f"{what} exceeds the {MAX_PAYLOAD_BYTES} byte limit")
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise InvalidArgumentError(f"{what} must not contain NUL characters")
    return text, raw


def json_text_and_size(value: object, what: str = "data") -> tuple[str, int]:
    """Serialise ``value`` to JSON text and its size in UTF-8 bytes, refusing what
    PostgreSQL's ``jsonb`` cannot hold (NaN, infinities, NUL, lone surrogates, in keys and
    values alike) and payloads over :data:`MAX_PAYLOAD_BYTES`."""
    text, raw = _encoded(value, what)
    return text, len(raw)


def as_json_text(value: object, what: str = "data") -> str:
    """Serialise ``value`` to JSON text; see :func:`json_text_and_size` for what is refused."""
    return json_text_and_size(value, what)[0]


def as_data(value: object, what: str = "data") -> dict[str, Any]:
    """Validate a job payload: a JSON object (``None`` becomes ``{}``)."""
    return as_data_json(value, what)[0]


def as_data_json(value: object, what: str = "data") -> tuple[dict[str, Any], bytes]:
    """:func:`as_data`, and the payload's JSON as the UTF-8 bytes the check encoded (what an
    insert sends, so the payload is encoded once per enqueue)."""
    if value is None:
        return {}, b"{}"
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{what} must be a mapping (JSON object)")
    raw = _encoded(value, what)[1]
    return dict(value), raw


def bulk_items(data: object) -> list[Any]:
    """The items of a bulk enqueue's ``data`` as a list (each still to be checked).

    Raises:
        InvalidArgumentError: ``data`` is not an iterable (a mapping or a string is refused).
    """
    if isinstance(data, Mapping | str | bytes) or not isinstance(data, Iterable):
        raise InvalidArgumentError("data must be an iterable of mappings")
    try:
        return list(data)
    except TypeError:
        raise InvalidArgumentError("data must be an iterable of mappings") from None


def _check_bulk_total(total: int, index: int) -> None:
    if total > MAX_BULK_PAYLOAD_BYTES:
        raise InvalidArgumentError(
            f"the payloads of one bulk enqueue exceed the {MAX_BULK_PAYLOAD_BYTES} byte "
            f"limit (at data[{index}]); split it into several calls"
        )


def as_bulk_data(data: object) -> tuple[list[Mapping[str, Any]], list[str]]:
    """Validate the payloads of a bulk enqueue: an iterable of mappings (``None`` is ``{}``).

    Returns the payloads (as given, not copied) and their JSON texts, in input order.

    Raises:
        InvalidArgumentError: ``data`` is not an iterable of mappings, an item is refused by
            :func:`as_data`, or the payloads add up to more than
            :data:`MAX_BULK_PAYLOAD_BYTES`.
    """
    payloads: list[Mapping[str, Any]] = []
    texts: list[str] = []
    total = 0
    for index, item in enumerate(bulk_items(data)):
        if item is None:
            payloads.append({})
            texts.append("{}")
            total += 2
            continue
        what = f"data[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidArgumentError(f"{what} must be a mapping (JSON object)")
        text, raw = _encoded(item, what)
        total += len(raw)
        _check_bulk_total(total, index)
        payloads.append(item)
        texts.append(text)
    return payloads, texts


def as_bulk_json(data: object) -> list[bytes]:
    """:func:`as_bulk_data` returning only the payloads' JSON as UTF-8 bytes, the form a
    binary ``COPY`` sends (same checks, same errors)."""
    return list(iter_bulk_json(bulk_items(data)))


def iter_bulk_json(items: list[Any]) -> Iterator[bytes]:
    """Each item of :func:`bulk_items` checked as :func:`as_bulk_data` checks it, as JSON in
    UTF-8; raises at the first refused item, after yielding the items before it.

    Performance (docs/performance.md): one shared encoder, one encode per payload, no other
    object per payload; the PostgreSQL bulk enqueue encodes while its COPY streams.
    """
    total = 0
    for index, item in enumerate(items):
        if item is None:
            total += 2
            yield b"{}"
            continue
        if type(item) is not dict and not isinstance(item, Mapping):
            raise InvalidArgumentError(f"data[{index}] must be a mapping (JSON object)")
        try:
            text = _ENCODE(item)
            raw = text.encode("utf-8")
        except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
            _encoded(item, f"data[{index}]")  # raises the error the single enqueue raises
            raise  # pragma: no cover - _encoded refuses whatever failed here
        if len(raw) > MAX_PAYLOAD_BYTES or ("\\u0000" in text and _JSON_NUL.search(text)):
            _encoded(item, f"data[{index}]")
        total += len(raw)
        _check_bulk_total(total, index)
        yield raw


def as_aware_datetime(value: object, what: str = "run_at") -> datetime:
    """Require a timezone-aware datetime between :data:`MIN_TIMESTAMP` and
    :data:`MAX_TIMESTAMP` as a UTC instant (returned unchanged)."""
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime")
    try:
        offset = value.utcoffset()
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{what} has an unusable time zone: {exc}") from None
    if value.tzinfo is None or offset is None:
        raise InvalidArgumentError(f"{what} must be timezone-aware (naive datetimes are ambiguous)")
    try:
        instant = value.astimezone(UTC)
    except OverflowError:
        instant = None
    if instant is None or not MIN_TIMESTAMP <= instant <= MAX_TIMESTAMP:
        raise InvalidArgumentError(
            f"{what} must lie between {MIN_TIMESTAMP.date().isoformat()} and "
            f"{MAX_TIMESTAMP.date().isoformat()} (UTC), got {value.isoformat()}"
        )
    return value


def as_seconds(
    value: object, what: str, *, allow_zero: bool = False, maximum: float | None = None
) -> float:
    """Accept seconds (int/float) or a timedelta; return positive finite seconds.

    Args:
        value: Seconds or a ``timedelta``.
        what: The field's name, for the error message.
        allow_zero: Accept ``0``.
        maximum: The largest value accepted (one of the ``MAX_*_SECONDS`` bounds).
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        raise InvalidArgumentError(f"{what} must be seconds or a timedelta, got {value!r:.80}")
    if not math.isfinite(seconds):
        raise InvalidArgumentError(f"{what} must be finite")
    if seconds < 0 and allow_zero:
        raise InvalidArgumentError(f"{what} must not be negative")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidArgumentError(f"{what} must be positive")
    if maximum is not None and seconds > maximum:
        raise InvalidArgumentError(f"{what} must be at most {maximum:.0f} seconds")
    return seconds


def as_optional_seconds(
    value: object, what: str, *, allow_zero: bool = False, maximum: float
) -> float | None:
    """:func:`as_seconds`, with ``None`` passed through."""
    if value is None:
        return None
    return as_seconds(value, what, allow_zero=allow_zero, maximum=maximum)


def as_wait_timeout(value: object, what: str = "timeout") -> float | None:
    """A wait's timeout: ``None`` (wait for ever) or up to :data:`MAX_TIMEOUT_SECONDS`."""
    return as_optional_seconds(value, what, maximum=MAX_TIMEOUT_SECONDS)


def as_history_age(value: object, what: str = "older_than") -> float | None:
    """``clear_history``'s age: ``None`` or 0 to :data:`MAX_HISTORY_AGE_SECONDS` seconds."""
    return as_optional_seconds(value, what, allow_zero=True, maximum=MAX_HISTORY_AGE_SECONDS)


def as_count(value: object, what: str, *, maximum: int, minimum: int = 1) -> int:
    """An integer between ``minimum`` and ``maximum`` (``bool`` is refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise InvalidArgumentError(f"{what} must be an integer from {minimum} to {maximum}")
    return value


def as_priority(value: object) -> int:
    """Priorities are integers in the PostgreSQL smallint range; higher runs first."""
    if not isinstance(value, int) or isinstance(value, bool) or not -32768 <= value <= 32767:
        raise InvalidArgumentError("priority must be an integer between -32768 and 32767")
    return value


def as_optional_key(value: object, what: str) -> str | None:
    """Validate an optional short string key (singleton keys, queue names).

    Printable excludes NUL, control characters and surrogates.
    """
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_KEY_LENGTH
        or not value.isprintable()
    ):
        raise InvalidArgumentError(
            f"{what} must be a non-empty printable string of at most {MAX_KEY_LENGTH} "
            "characters (no NUL, control characters or lone surrogates)"
        )
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


def as_queues(value: object) -> tuple[str, ...]:
    """A sequence of queue names (a worker's ``queues``), each checked by :func:`as_queue`."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise InvalidArgumentError("queues must be a sequence of names, not a string")
    return tuple(as_queue(q) for q in value)
