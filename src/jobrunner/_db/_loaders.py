"""Timestamp loaders that never fail on a value Python cannot represent.

PostgreSQL's ``timestamp``/``timestamptz`` reach from 4713 BC to 294276 AD and include
``infinity`` / ``-infinity``; Python's ``datetime`` holds years 1 to 9999 only, and psycopg
raises ``DataError`` when it meets anything else. Every value the API writes is range-checked
(``_limits.MIN_TIMESTAMP`` to ``MAX_TIMESTAMP``), but a row written by hand-written SQL
(or by an older release) must not break a listing, the CLI or the dashboard. So the
connections jobrunner opens load such values clamped:

* ``-infinity`` and anything before year 1 (``... BC``) load as ``datetime.min``;
* ``infinity`` and anything after year 9999 load as ``datetime.max``;

both in UTC for ``timestamptz`` and naive for ``timestamp``. Every other value loads exactly as
psycopg's own (C or Python) loader loads it. Only jobrunner's connections use these loaders: a
connection passed in by the caller (``connection=``) keeps its own.
"""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import abc
from psycopg.adapt import AdaptersMap, Buffer, Loader
from psycopg.pq import Format

__all__ = ["EARLIEST", "LATEST", "tolerant_adapters"]

EARLIEST = datetime.min
"""What a timestamp before year 1 (or ``-infinity``) loads as (UTC for ``timestamptz``)."""
LATEST = datetime.max
"""What a timestamp after year 9999 (or ``infinity``) loads as (UTC for ``timestamptz``)."""

_INT8 = struct.Struct("!q")


def _clamped(data: Buffer, fmt: Format, aware: bool) -> datetime:
    raw = bytes(data)
    if fmt == Format.BINARY:
        early = _INT8.unpack(raw)[0] < 0
    else:
        early = raw.startswith(b"-") or raw.rstrip().endswith(b"BC")
    value = EARLIEST if early else LATEST
    return value.replace(tzinfo=UTC) if aware else value


def _tolerant(type_name: str, fmt: Format, base: type[abc.Loader]) -> type[Loader]:
    aware = type_name == "timestamptz"

    class TolerantTimestampLoader(Loader):
        format = fmt

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._inner = base(oid, context)

        def load(self, data: Buffer) -> datetime:
            try:
                value: datetime = self._inner.load(data)
            except psycopg.DataError:
                return _clamped(data, fmt, aware)
            return value

    TolerantTimestampLoader.__name__ = f"Tolerant{base.__name__}"
    TolerantTimestampLoader.__qualname__ = TolerantTimestampLoader.__name__
    return TolerantTimestampLoader


@functools.cache
def tolerant_adapters() -> AdaptersMap:
    """psycopg's default adapters with the clamping timestamp loaders; pass as ``context=``
    when connecting (built once, from the adapters configured when first called)."""
    adapters = AdaptersMap(psycopg.adapters)
    for type_name in ("timestamp", "timestamptz"):
        oid = psycopg.adapters.types[type_name].oid
        for fmt in (Format.TEXT, Format.BINARY):
            base = psycopg.adapters.get_loader(oid, fmt)
            if base is not None:
                adapters.register_loader(type_name, _tolerant(type_name, fmt, base))
    return adapters
