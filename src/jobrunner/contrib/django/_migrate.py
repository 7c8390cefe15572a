"""Applying jobrunner's SQL migrations from Django's ``migrate``."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from jobrunner.contrib.django._settings import database_url, read_config

T = TypeVar("T")


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # Called under a running loop (an async test, an async caller): a thread has none.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def apply_migrations(using: str) -> list[int] | None:
    """Apply pending jobrunner migrations when ``using`` is the jobrunner database.

    Returns:
        The versions applied (possibly none), or ``None`` when ``using`` is another alias or
        the runner type needs no database (``memory``).
    """
    from jobrunner._db._database import Database

    config = read_config()
    if using != config.database or config.settings.runner_type == "memory":
        return None
    database = Database(database_url(config), schema=config.settings.schema, max_size=1)
    return _run(database.migrate)


def apply_in_migration(apps: Any, schema_editor: Any) -> None:
    """The ``RunPython`` of ``0001_initial``."""
    apply_migrations(schema_editor.connection.alias)


def apply_after_migrate(sender: Any, using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """``post_migrate``: migrations of a newer jobrunner, which ``0001_initial`` predates."""
    applied = apply_migrations(using)
    if applied and verbosity >= 1:
        versions = ", ".join(f"{v:04d}" for v in applied)
        print(
            f"  Applied jobrunner migrations {versions} to schema {read_config().settings.schema}"
        )
