"""Named SQL queries loaded from ``jobrunner/_sql/queries/*.sql``.

A file holds blocks that start with ``-- name: <query_name>``. ``{schema}`` in a query is
replaced by the quoted schema identifier (through ``psycopg.sql``); write a literal brace as
``{{`` or ``}}``. Every value is a bound parameter (``%(name)s``).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from psycopg import sql

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def _raw_queries() -> dict[str, str]:
    found: dict[str, str] = {}
    folder = resources.files("jobrunner._sql").joinpath("queries")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        parts = _NAME.split(text)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"duplicate query name {name!r} in {entry.name}")
            found[name] = body.strip().rstrip(";")
    return found


class Queries:
    """The named queries rendered for one schema; ``queries.claim_jobs`` is ready to execute."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._rendered: dict[str, str] = {}

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._rendered[name]
        except KeyError:
            pass
        try:
            raw = _raw_queries()[name]
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r}") from None
        text = sql.SQL(raw).format(schema=sql.Identifier(self.schema)).as_string(None)
        self._rendered[name] = text
        return text

    def with_identifiers(self, name: str, **identifiers: str) -> str:
        """The named query with ``{schema}`` and each ``{key}`` of ``identifiers`` rendered as
        quoted identifiers (for statements that take no parameters there, e.g. ``LISTEN``)."""
        try:
            raw = _raw_queries()[name]
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r}") from None
        names = {key: sql.Identifier(value) for key, value in identifiers.items()}
        return sql.SQL(raw).format(schema=sql.Identifier(self.schema), **names).as_string(None)

    @staticmethod
    def names() -> list[str]:
        """Every query name known."""
        return sorted(_raw_queries())


def fragment(name: str) -> str:
    """A named query that names no identifier (a filter fragment), as written."""
    try:
        return _raw_queries()[name]
    except KeyError:
        raise AttributeError(f"no SQL query named {name!r}") from None


@functools.cache
def queries_for(schema: str) -> Queries:
    """The shared :class:`Queries` of ``schema``."""
    return Queries(schema)
