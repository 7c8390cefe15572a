"""LISTEN for the PostgreSQL store: NOTIFY payloads become typed notices, and a self-probe
finds a connection that died without telling (a NAT or firewall dropped it)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from psycopg import Notify

from jobrunner._db._errors import translate_errors
from jobrunner._queue._store import (
    CancelRequested,
    ListenerLost,
    Notice,
    SchedulesChanged,
    Topic,
    WorkAvailable,
)

if TYPE_CHECKING:
    from jobrunner._db._database import AsyncConn, Database

__all__ = ["Listener"]

_PROBE_PREFIX = "probe:"
#: Seconds a probe may take to come back before the connection counts as lost.
PROBE_TIMEOUT = 5.0


def decode_cancel(payload: str) -> CancelRequested | None:
    """A cancel NOTIFY's payload, ``job_id:token`` (``job_id`` from older releases)."""
    job_part, _, token_part = payload.partition(":")
    try:
        return CancelRequested(uuid.UUID(job_part), int(token_part) if token_part else None)
    except ValueError:
        return None


class Listener:
    """The LISTEN side of one :class:`PostgresStore` (probe state survives reconnects)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._probe_payload = f"{_PROBE_PREFIX}{uuid.uuid4()}"
        self._last_probe = 0.0
        self._channels = {
            Topic.WORK: db.channel_jobs,
            Topic.CANCELS: db.channel_cancel,
            Topic.SCHEDULES: db.channel_schedules,
        }

    async def listen(
        self,
        topics: frozenset[Topic],
        deliver: Callable[[Notice], None],
        *,
        ready: Callable[[], None],
        probe_interval: float | None = None,
    ) -> NoReturn:
        """See :meth:`jobrunner._queue._store.QueueStore.listen`."""
        if not topics:
            raise ValueError("listen to at least one topic")
        conn = await self._db.dedicated_connection()
        try:
            with translate_errors():
                channels = [self._channels[t] for t in Topic if t in topics]
                for channel in channels:
                    query = self._db.queries.with_identifiers("listen_channel", channel=channel)
                    await conn.execute(query)
                ready()
                if probe_interval is None:
                    await self._deliver(conn, deliver, None)
                    raise ListenerLost("the LISTEN connection stopped delivering")
                await self._deliver_probed(conn, deliver, channels[0], probe_interval)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    def _notice(self, note: Notify) -> Notice | None:
        if note.payload.startswith(_PROBE_PREFIX):
            return None
        if note.channel == self._channels[Topic.CANCELS]:
            return decode_cancel(note.payload)
        if note.channel == self._channels[Topic.SCHEDULES]:
            return SchedulesChanged()
        return WorkAvailable()

    async def _deliver(
        self, conn: AsyncConn, deliver: Callable[[Notice], None], timeout: float | None
    ) -> tuple[bool, bool]:
        """Deliver what arrives (for ``timeout`` seconds, or until the connection ends);
        returns (anything received, our probe received)."""
        received = probed = False
        gen = conn.notifies(timeout=timeout)
        try:
            async for note in gen:
                received = True
                if note.payload == self._probe_payload:
                    probed = True
                    continue
                notice = self._notice(note)
                if notice is not None:
                    deliver(notice)
        finally:
            await gen.aclose()
        return received, probed

    async def _deliver_probed(
        self,
        conn: AsyncConn,
        deliver: Callable[[Notice], None],
        probe_channel: str,
        probe_interval: float,
    ) -> NoReturn:
        probe_sent: float | None = None
        while True:
            received, probed = await self._deliver(conn, deliver, 1.0)
            if probed:
                probe_sent = None
            now = time.monotonic()
            if probe_sent is not None and now - probe_sent > PROBE_TIMEOUT:
                raise ListenerLost(
                    f"LISTEN connection did not deliver our probe in {PROBE_TIMEOUT:.0f} s"
                )
            if not received and probe_sent is None and now - self._last_probe >= probe_interval:
                self._last_probe = probe_sent = now
                async with self._db.connection() as probe_conn:
                    await probe_conn.execute(
                        self._db.queries.notify_jobs,
                        {"channel": probe_channel, "payload": self._probe_payload},
                    )
