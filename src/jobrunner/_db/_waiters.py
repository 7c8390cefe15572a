"""Waiting for jobs to finish, woken by the database: one LISTEN connection per process.

Migration 0008 makes every change of a job to a final status NOTIFY ``<schema>_done`` with the
job id. :class:`JobWaiters` keeps one dedicated connection listening on that channel while
anybody waits (and briefly after), and wakes exactly the waiters of the job named in each
notification; thousands of concurrent waiters share it. Each waiter re-reads its job (scoped by
tenant) when woken, so the notification carries no data and cannot be spoofed into a result.

No notification is missed: a waiter registers before it first reads the job, and the listener
is connected (its LISTEN committed) before that read. When the connection drops, every waiter
re-reads once it is back; while it cannot be opened, waiters poll at their ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from jobrunner._db._queries import queries_for

if TYPE_CHECKING:
    from jobrunner._models import JobInfo

logger = logging.getLogger("jobrunner.db")

#: Seconds the listening connection stays open after the last waiter left (so a loop of waits
#: does not reconnect for each).
IDLE_CLOSE_SECONDS = 10.0
#: While notifications flow, a waiter still re-reads its job this often (a silently dead TCP
#: connection delivers nothing and reports no error).
SAFETY_RECHECK_SECONDS = 30.0
#: Seconds a waiter gives the listener to connect before it starts polling instead.
CONNECT_WAIT_SECONDS = 5.0


class JobWaiters:
    """The waiters of one schema's jobs, sharing one LISTEN connection.

    Args:
        schema: The schema whose finished jobs are announced on ``<schema>_done``.
        connect: Opens a new connection outside any pool (the database's
            ``dedicated_connection``); the listener keeps it.
    """

    def __init__(
        self, schema: str, connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]
    ) -> None:
        self._schema = schema
        self._connect = connect
        self._waiting: dict[uuid.UUID, set[asyncio.Future[None]]] = {}
        self._count = 0
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._lost = asyncio.Event()
        self._closed = False

    @property
    def channel(self) -> str:
        """The NOTIFY channel of finished jobs."""
        return f"{self._schema}_done"

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up right now."""
        return self._listening.is_set()

    async def listening_ready(self) -> None:
        """Return once the LISTEN connection is up (started by the first waiter)."""
        await self._listening.wait()

    async def wait(
        self,
        job_id: uuid.UUID,
        read: Callable[[], Awaitable[JobInfo]],
        poll_interval: float,
    ) -> JobInfo:
        """Read the job with ``read`` until it is final, re-reading when notified.

        Args:
            job_id: The job.
            read: Reads the job (tenant-scoped); raises when it does not exist.
            poll_interval: Pause between reads while notifications are unavailable.
        """
        self._count += 1
        try:
            self._start_listener()
            await self._until_listening()
            while True:
                woken = self._register(job_id)
                try:
                    info = await read()
                    if info.status.is_final:
                        return info
                    if self._listening.is_set():
                        pause = max(poll_interval, SAFETY_RECHECK_SECONDS)
                    else:
                        pause = poll_interval
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await woken
                finally:
                    self._unregister(job_id, woken)
        finally:
            self._count -= 1

    async def close(self) -> None:
        """Stop listening; waiters still waiting re-read their job (and fail if the database
        is closed)."""
        self._closed = True
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._wake_all()

    # -- internals ----------------------------------------------------------------------------
    def _register(self, job_id: uuid.UUID) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, set()).add(future)
        return future

    def _unregister(self, job_id: uuid.UUID, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(job_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[job_id]

    def _wake(self, job_id: uuid.UUID) -> None:
        for future in self._waiting.get(job_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def _start_listener(self) -> None:
        if self._closed:
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name=f"jobrunner-waiters-{self._schema}"
            )

    async def _until_listening(self) -> None:
        if self._listening.is_set():
            return
        # Connecting takes a round trip or two; past that, waiters poll until it is up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_WAIT_SECONDS):
                await self._listening.wait()

    async def _listen(self) -> None:
        backoff = 0.1
        idle_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self._closed:
            conn: Any = None
            try:
                conn = await self._connect()
                await conn.execute(
                    queries_for(self._schema).with_identifiers(
                        "listen_channel", channel=self.channel
                    )
                )
                self._listening.set()
                backoff = 0.1
                # Anything that finished while we were not listening was not announced to us.
                self._wake_all()
                while True:
                    gen = conn.notifies(timeout=1.0)
                    try:
                        async for note in gen:
                            try:
                                self._wake(uuid.UUID(note.payload))
                            except ValueError:
                                continue
                    finally:
                        await gen.aclose()
                    if self._count == 0:
                        now = loop.time()
                        idle_since = now if idle_since is None else idle_since
                        if now - idle_since >= IDLE_CLOSE_SECONDS:
                            # Decided synchronously: a waiter arriving from now on starts a
                            # new listener instead of waiting for this closing one.
                            self._listener = None
                            self._listening.clear()
                            return
                    else:
                        idle_since = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on any listener failure
                logger.warning(
                    "waiters' listening connection failed (%s); reconnecting in %.1f s",
                    exc,
                    backoff,
                )
            finally:
                self._listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            # Waiters poll meanwhile (and re-read once the connection is back).
            self._wake_all()
            if self._count == 0:
                if self._listener is asyncio.current_task():
                    self._listener = None
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
