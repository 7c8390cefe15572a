"""The schedule ticker: the loop that fires due ticks of recurring schedules as jobs.

Every worker runs one (``WorkerSettings.run_scheduler``). Correctness never depends on how
many run: the store fires each tick exactly once (:meth:`QueueStore.fire_due_ticks`).

Timing: the loop sleeps until the earliest next tick (a timer, not a poll) and is woken early
by a :attr:`~jobrunner._queue._store.Topic.SCHEDULES` notice whenever a schedule is created,
changed or resumed. A slow safety poll (``max_sleep``) covers a lost notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from jobrunner._errors import JobRunnerError
from jobrunner._queue._store import Notice, QueueStore, Topic
from jobrunner._recurrence import DEFAULT_MISFIRE_GRACE

__all__ = ["Clock", "ScheduleTicker"]

logger = logging.getLogger("jobrunner.scheduler")

#: A callable returning the current time as an aware datetime.
Clock = Callable[[], datetime]

_TOPICS = frozenset({Topic.SCHEDULES})


class ScheduleTicker:
    """Fire what is due, sleep until the next tick or a notice; repeat.

    Args:
        store: Where the schedules live.
        clock: Returns the current aware datetime; default: the store's clock (PostgreSQL's:
            one clock for every host, so skewed hosts cannot fire early).
        batch: Schedules handled per call to the store.
        max_sleep: Longest sleep without a notice (safety net).
        grace: Lateness beyond which a tick counts as missed.
    """

    def __init__(
        self,
        store: QueueStore,
        *,
        clock: Clock | None = None,
        batch: int = 100,
        max_sleep: float = 30.0,
        grace: timedelta = DEFAULT_MISFIRE_GRACE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.batch = batch
        self.max_sleep = max_sleep
        self.grace = grace
        self.fired_total = 0
        self.listening = asyncio.Event()
        self._wake = asyncio.Event()
        self._listen_backoff = 0.2

    def wake(self) -> None:
        """Look for due ticks now."""
        self._wake.set()

    async def run_once(self) -> float:
        """Fire everything due; return seconds to sleep before the next look."""
        while True:
            fired = await self.store.fire_due_ticks(
                now=self._now(), limit=self.batch, grace=self.grace
            )
            self.fired_total += sum(len(f.jobs) for f in fired)
            if len(fired) < self.batch:
                break
        delay = await self.store.seconds_until_next_tick(now=self._now())
        if delay is None:
            return self.max_sleep
        # A hair late rather than early: waking before the tick would only loop once more.
        return min(max(delay, 0.0) + 0.002, self.max_sleep)

    async def run(self) -> None:
        """Run until cancelled."""
        listener = asyncio.create_task(self._listen_loop(), name="jobrunner-scheduler-listen")
        backoff = 0.2
        try:
            while True:
                self._wake.clear()
                try:
                    delay = await self.run_once()
                    backoff = 0.2
                except (JobRunnerError, OSError) as exc:
                    logger.warning("scheduler pass failed (%s); retrying in %.1f s", exc, backoff)
                    delay = backoff
                    backoff = min(backoff * 2, self.max_sleep)
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event fires, and the worker's shutdown would then hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    def _now(self) -> datetime | None:
        return None if self.clock is None else self.clock()

    def _on_listening(self) -> None:
        self.listening.set()
        self._wake.set()  # changes made while we were not listening
        self._listen_backoff = 0.2

    def _on_notice(self, notice: Notice) -> None:
        self._wake.set()

    async def _listen_loop(self) -> None:
        while True:
            try:
                await self.store.listen(_TOPICS, self._on_notice, ready=self._on_listening)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - listen again after any listener failure
                logger.warning(
                    "scheduler listener lost (%s); reconnecting in %.1f s",
                    exc,
                    self._listen_backoff,
                )
            finally:
                self.listening.clear()
            await asyncio.sleep(self._listen_backoff)
            self._listen_backoff = min(self._listen_backoff * 2, 5.0)
