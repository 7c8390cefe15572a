"""The handler registry: which function runs for which job name, with what policy.

Handlers take ``(ctx, data)`` and are either ``async def`` or plain functions (run in a thread
pool). Register them with :func:`job` or :meth:`JobHandlerRegistry.register`.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from jobrunner._errors import DuplicateHandlerError, HandlerNotFoundError, InvalidArgumentError
from jobrunner._limits import MAX_TIMEOUT_SECONDS
from jobrunner._policy import DEFAULT_TIMEOUT, JobPolicy, RetryPolicy
from jobrunner._validation import as_job_name, as_queue, as_seconds

if TYPE_CHECKING:
    from jobrunner._context import JobContext

__all__ = ["DEFAULT_QUEUE", "HandlerSpec", "JobHandlerRegistry", "default_registry", "job"]

DEFAULT_QUEUE = "default"

Handler = Callable[["JobContext", dict[str, Any]], Any]
H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class HandlerSpec:
    """A registered handler and its execution policy."""

    name: str
    """The job name it handles."""
    handler: Handler
    """The function called as ``handler(ctx, data)``."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Attempts and backoff."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds an attempt may run before it is cancelled and counted as failed.

    The failed attempt records a ``JobTimeoutError`` and follows the retry policy. An
    ``async def`` handler is cancelled. A plain ``def`` handler's thread cannot be interrupted:
    ``ctx.is_cancelled()`` turns True so it can stop, whatever it returns or writes later is
    discarded (its result, progress and completion are fenced out), and its thread stays busy
    until it returns.
    """
    queue: str = DEFAULT_QUEUE
    """Queue jobs of this name go to unless ``schedule_job(queue=...)`` says otherwise."""

    @property
    def policy(self) -> JobPolicy:
        """The policy a job of this handler is enqueued with (stored with the job)."""
        return JobPolicy(retry=self.retry, timeout=self.timeout)

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function (else it runs in a thread)."""
        target = self.handler
        while isinstance(target, functools.partial):
            target = target.func
        return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )


class JobHandlerRegistry:
    """Maps job names to :class:`HandlerSpec`.

    A process normally uses the shared :func:`default_registry`; runners and tests may build
    their own. The class methods mirror the seed's static API and act on the default registry.
    """

    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        self._lock = threading.Lock()

    # -- instance API -----------------------------------------------------------------------
    def add(
        self,
        name: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
    ) -> HandlerSpec:
        """Register ``handler`` for ``name``; re-registering the same function is a no-op.

        Raises:
            DuplicateHandlerError: ``name`` already has a different handler.
            InvalidArgumentError: an argument is malformed.
        """
        name = as_job_name(name)
        if not callable(handler):
            raise InvalidArgumentError("handler must be callable")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError("retry must be a RetryPolicy")
        spec = HandlerSpec(
            name=name,
            handler=handler,
            retry=retry or RetryPolicy(),
            timeout=DEFAULT_TIMEOUT
            if timeout is None
            else as_seconds(timeout, "timeout", maximum=MAX_TIMEOUT_SECONDS),
            queue=DEFAULT_QUEUE if queue is None else as_queue(queue),
        )
        with self._lock:
            existing = self._specs.get(name)
            if existing is not None:
                if _same_function(existing.handler, handler):
                    self._specs[name] = spec
                    return spec
                raise DuplicateHandlerError(
                    f"job {name!r} already has handler {_describe(existing.handler)}; "
                    f"refusing {_describe(handler)}"
                )
            self._specs[name] = spec
        return spec

    def get(self, name: str) -> HandlerSpec:
        """The spec for ``name``.

        Raises:
            HandlerNotFoundError: nothing is registered under ``name``.
        """
        try:
            return self._specs[name]
        except KeyError:
            raise HandlerNotFoundError(name) from None

    def find(self, name: str) -> HandlerSpec | None:
        """The spec for ``name`` or ``None``."""
        return self._specs.get(name)

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests use this)."""
        with self._lock:
            self._specs.pop(name, None)

    def clear(self) -> None:
        """Forget every handler (tests use this)."""
        with self._lock:
            self._specs.clear()

    def names(self) -> list[str]:
        """Registered job names, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    # -- the seed's static style ------------------------------------------------------------
    @classmethod
    def register(
        cls,
        name: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
    ) -> HandlerSpec:
        """Register on the default registry, as the seed's ``JobHandlerRegistry.register``."""
        return _DEFAULT.add(name, handler, retry=retry, timeout=timeout, queue=queue)

    @classmethod
    def default(cls) -> JobHandlerRegistry:
        """The process-wide registry that :func:`job` fills."""
        return _DEFAULT


_DEFAULT = JobHandlerRegistry()


def default_registry() -> JobHandlerRegistry:
    """The process-wide registry that :func:`job` fills."""
    return _DEFAULT


@overload
def job(name: H, /) -> H: ...


@overload
def job(
    name: str | None = None,
    /,
    *,
    retry: RetryPolicy | None = None,
    timeout: float | timedelta | None = None,
    queue: str | None = None,
    registry: JobHandlerRegistry | None = None,
) -> Callable[[H], H]: ...


def job(
    name: str | H | None = None,
    /,
    *,
    retry: RetryPolicy | None = None,
    timeout: float | timedelta | None = None,
    queue: str | None = None,
    registry: JobHandlerRegistry | None = None,
) -> H | Callable[[H], H]:
    """Register the decorated function as the handler of job ``name``.

    The name defaults to the function's ``__name__``. The function is returned unchanged, so
    it can still be called directly.

    Example:
        >>> @job("generate-invoice", retry=RetryPolicy(max_attempts=5), timeout=600)
        ... async def generate_invoice(ctx, data):
        ...     return {"ok": True}
    """
    # ``is None``, not ``or``: an empty registry is falsy (it has ``__len__``).
    if callable(name):
        func = name
        (_DEFAULT if registry is None else registry).add(func.__name__, func)
        return func

    def decorate(func: H) -> H:
        (_DEFAULT if registry is None else registry).add(
            name if name is not None else func.__name__,
            func,
            retry=retry,
            timeout=timeout,
            queue=queue,
        )
        return func

    return decorate


def _same_function(a: Any, b: Any) -> bool:
    if a is b:
        return True
    # Re-importing a module (for example ``python -m app`` plus ``import app``) creates a new
    # function object for the same source; treat that as the same handler.
    return bool(
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
        and getattr(a, "__qualname__", None) is not None
    )


def _describe(func: Any) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


AsyncHandler = Callable[["JobContext", dict[str, Any]], Awaitable[Any]]
