"""JobRunnerFactory: the process-wide runner built from the environment."""

from __future__ import annotations

import asyncio
import threading

from jobrunner._config import Settings
from jobrunner._from_settings import runner_from_settings
from jobrunner._runner import JobRunner
from jobrunner._sync import SyncJobRunner
from jobrunner.compat import use_process_runner
from jobrunner.registry import JobHandlerRegistry


class JobRunnerFactory:
    """Builds runners from :class:`Settings` and keeps one per process.

    ``await JobRunnerFactory.get_instance()`` returns the same started runner on every call.
    Tests call :meth:`set_instance` to install their own and :meth:`reset` to close it.
    """

    _instance: JobRunner | None = None
    _sync_instance: SyncJobRunner | None = None
    _lock = threading.Lock()
    _async_lock: asyncio.Lock | None = None
    _lock_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def get_instance(cls, settings: Settings | None = None) -> JobRunner:
        """The process-wide runner, built and started on first use."""
        if cls._instance is not None:
            return cls._instance
        loop = asyncio.get_running_loop()
        # A lock is bound to the loop it first waited in; tests run one loop per test.
        if cls._async_lock is None or cls._lock_loop is not loop:
            cls._async_lock, cls._lock_loop = asyncio.Lock(), loop
        async with cls._async_lock:
            if cls._instance is None:
                cls._instance = await cls.create(settings)
        return cls._instance

    @classmethod
    def get_sync_instance(cls, settings: Settings | None = None) -> SyncJobRunner:
        """A blocking twin of :meth:`get_instance` for sync code (Django, Flask, scripts)."""
        with cls._lock:
            if cls._sync_instance is None:
                cls._sync_instance = SyncJobRunner.from_factory(settings)
            return cls._sync_instance

    @classmethod
    async def create(
        cls, settings: Settings | None = None, *, registry: JobHandlerRegistry | None = None
    ) -> JobRunner:
        """Build and start a new runner (not the singleton) from ``settings`` or the env."""
        return await runner_from_settings(settings, registry=registry)

    @classmethod
    def set_instance(cls, runner: JobRunner | None) -> None:
        """Install ``runner`` as the singleton (tests, or hosts that build it themselves)."""
        cls._instance = runner

    @classmethod
    async def reset(cls) -> None:
        """Close and forget the singletons."""
        runner, cls._instance = cls._instance, None
        sync_runner, cls._sync_instance = cls._sync_instance, None
        if runner is not None:
            await runner.close()
        if sync_runner is not None:
            await asyncio.to_thread(sync_runner.close)


# The seed's JobScheduler.get_instance() wraps this process-wide runner.
use_process_runner(JobRunnerFactory.get_instance)
