"""jobrunner in ASGI applications: FastAPI and Starlette (extra ``jobrunner-pg[asgi]``).

Three pieces, each optional::

    from fastapi import Depends, FastAPI
    from jobrunner import JobRunner
    from jobrunner.contrib.asgi import get_runner, jobrunner_lifespan, mount_dashboard

    app = FastAPI(lifespan=jobrunner_lifespan(worker=True))   # runner (+ worker) per process

    @app.post("/reports")
    async def create_report(runner: JobRunner = Depends(get_runner)) -> dict:
        handle = await runner.schedule_job("build-report", {}, tenant=TENANT)
        return {"job_id": str(handle.job_id)}

    mount_dashboard(app, "/admin/jobs", auth=require_admin)     # behind your own dependency

:func:`jobrunner_lifespan` opens the runner at start-up and closes it at shutdown, optionally
with a worker in the same process; :func:`get_runner` reads it from the request (a FastAPI
dependency, or a plain call in Starlette); :func:`mount_dashboard` puts the monitoring
dashboard under a path, guarded by the host's authentication (a FastAPI dependency, or a
callable taking the request for Starlette). See docs/howto/fastapi.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from jobrunner._config import Settings
from jobrunner._errors import ConfigurationError, InvalidArgumentError
from jobrunner._factory import JobRunnerFactory
from jobrunner._runner import JobRunner, JobWorker
from jobrunner.registry import JobHandlerRegistry

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = [
    "STATE_KEY",
    "dashboard_app",
    "dashboard_router",
    "get_runner",
    "jobrunner_lifespan",
    "mount_dashboard",
]

logger = logging.getLogger("jobrunner.contrib.asgi")

#: Name of the runner in the lifespan state (``request.state.jobrunner``) and ``app.state``.
STATE_KEY = "jobrunner"
# Where a FastAPI route hands the auth dependency's result to the dashboard it forwards to.
_PRINCIPAL_KEY = "jobrunner.principal"

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]
RunnerSource = JobRunner | Callable[[], Awaitable[JobRunner]]


# -- lifespan ---------------------------------------------------------------------------------
def jobrunner_lifespan(
    *,
    settings: Settings | None = None,
    registry: JobHandlerRegistry | None = None,
    runner: RunnerSource | None = None,
    worker: bool = False,
    concurrency: int | None = None,
    queues: Sequence[str] | None = None,
    grace: float | None = None,
    worker_options: Mapping[str, Any] | None = None,
    then: Lifespan | None = None,
    set_default: bool = True,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``FastAPI(lifespan=...)`` or ``Starlette(lifespan=...)``.

    At start-up it builds and starts a runner (from ``settings``, else the environment, like
    :meth:`JobRunnerFactory.create`), optionally starts a worker in this process and waits
    until it consumes, then runs ``then`` (the application's own lifespan) inside. At shutdown
    it does the reverse: ``then`` exits, the worker stops gracefully (running jobs get
    ``grace`` seconds, the rest is re-queued), the runner closes.

    The runner is in the lifespan state (``request.state.jobrunner``), on ``app.state.jobrunner``
    and, with ``set_default``, :meth:`JobRunnerFactory.get_instance` returns it meanwhile.

    Args:
        settings: Settings to build the runner from (default: the environment).
        registry: The handler registry (default: the process-wide one ``@job`` fills).
        runner: A runner (started or not) or an async factory of one, instead of building
            one; it is closed at shutdown all the same.
        worker: Also run a worker in this process (small deployments; otherwise run
            ``jobrunner-worker`` next to the app).
        concurrency: The embedded worker's concurrency (default: the backend's).
        queues: The embedded worker's queues (default: its registered handlers' queues).
        grace: Seconds running jobs get at shutdown (default: the backend's, 30).
        worker_options: Further ``create_worker`` options (``lease_seconds``, ...).
        then: The application's own lifespan, entered once the runner is up; a mapping it
            yields is merged into the state.
        set_default: Install the runner as :class:`JobRunnerFactory`'s instance while the app
            runs (restoring the previous one afterwards).

    Returns:
        A callable taking the app and returning an async context manager, as ASGI frameworks
        expect of a lifespan.

    Raises:
        InvalidArgumentError: an argument has the wrong type, or ``runner`` is combined with
            ``settings`` or ``registry``.
    """
    if settings is not None and not isinstance(settings, Settings):
        raise InvalidArgumentError("settings must be a jobrunner Settings")
    if registry is not None and not isinstance(registry, JobHandlerRegistry):
        raise InvalidArgumentError("registry must be a JobHandlerRegistry")
    if runner is not None:
        if not isinstance(runner, JobRunner) and not callable(runner):
            raise InvalidArgumentError("runner must be a JobRunner or an async factory of one")
        if settings is not None or registry is not None:
            raise InvalidArgumentError("pass either runner or settings/registry, not both")
    if not isinstance(worker, bool):
        raise InvalidArgumentError("worker must be True or False")
    if then is not None and not callable(then):
        raise InvalidArgumentError("then must be a lifespan: a callable taking the app")
    if queues is not None and (isinstance(queues, str) or not isinstance(queues, Sequence)):
        raise InvalidArgumentError("queues must be a list of queue names")
    options: dict[str, Any] = dict(worker_options or {})
    if concurrency is not None:
        options["concurrency"] = concurrency
    if queues is not None:
        options["queues"] = list(queues)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        opened = await _open(runner, settings, registry)
        previous = JobRunnerFactory._instance
        app_state = getattr(app, "state", None)
        try:
            if set_default:
                JobRunnerFactory.set_instance(opened)
            if app_state is not None:
                setattr(app_state, STATE_KEY, opened)
            async with contextlib.AsyncExitStack() as stack:
                if worker:
                    await stack.enter_async_context(_embedded_worker(opened, grace, options))
                state: dict[str, Any] = {STATE_KEY: opened}
                if then is not None:
                    inner = await stack.enter_async_context(then(app))
                    if inner is not None:
                        if not isinstance(inner, Mapping):
                            raise ConfigurationError(
                                "the lifespan passed as then= must yield a mapping or None"
                            )
                        state.update(inner)
                yield state
        finally:
            if set_default and JobRunnerFactory._instance is opened:
                JobRunnerFactory.set_instance(previous)
            if app_state is not None and getattr(app_state, STATE_KEY, None) is opened:
                delattr(app_state, STATE_KEY)
            await opened.close()

    return lifespan


async def _open(
    runner: RunnerSource | None,
    settings: Settings | None,
    registry: JobHandlerRegistry | None,
) -> JobRunner:
    if runner is None:
        return await JobRunnerFactory.create(settings, registry=registry)
    if isinstance(runner, JobRunner):
        await runner.start()
        return runner
    made = await runner()
    if not isinstance(made, JobRunner):
        raise ConfigurationError(
            "the runner factory passed to jobrunner_lifespan returned "
            f"{type(made).__name__}, not a JobRunner"
        )
    await made.start()
    return made


@contextlib.asynccontextmanager
async def _embedded_worker(
    runner: JobRunner, grace: float | None, options: Mapping[str, Any]
) -> AsyncIterator[JobWorker]:
    worker = runner.create_worker(**options)
    task = asyncio.create_task(worker.run(), name="jobrunner-embedded-worker")
    started = asyncio.create_task(worker.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # why the worker could not start
        raise ConfigurationError("the embedded worker stopped as soon as it started")
    stopping = False

    def report_early_end(ended: asyncio.Task[None]) -> None:
        # The app keeps serving without its worker: say so when it happens, not at shutdown.
        if stopping or ended.cancelled():
            return
        error = ended.exception()
        if error is not None:
            logger.error("the embedded jobrunner worker failed", exc_info=error)
        else:
            logger.error("the embedded jobrunner worker stopped before the app")

    task.add_done_callback(report_early_end)
    logger.info("embedded jobrunner worker started")
    try:
        yield worker
    finally:
        stopping = True
        if not task.done():
            await worker.stop(grace=grace)
            await task
        logger.info("embedded jobrunner worker stopped")


# -- the runner in requests -------------------------------------------------------------------
def get_runner(request: HTTPConnection) -> JobRunner:
    """The runner :func:`jobrunner_lifespan` opened for this app.

    Use it as a FastAPI dependency (``runner: JobRunner = Depends(get_runner)``) or call it
    with a Starlette request or websocket.

    Raises:
        ConfigurationError: the app was not started with :func:`jobrunner_lifespan`.
    """
    runner = _runner_in(request.scope)
    if runner is None:
        raise ConfigurationError(
            "no jobrunner runner on this app: create it with "
            "lifespan=jobrunner_lifespan(...) (jobrunner.contrib.asgi)"
        )
    return runner


def _runner_in(scope: Scope) -> JobRunner | None:
    state = scope.get("state")
    if isinstance(state, Mapping):
        found = state.get(STATE_KEY)
        if isinstance(found, JobRunner):
            return found
    app_state = getattr(scope.get("app"), "state", None)
    found = getattr(app_state, STATE_KEY, None)
    return found if isinstance(found, JobRunner) else None


# -- the dashboard ----------------------------------------------------------------------------
class _LifespanDashboard:
    """ASGI app: the dashboard of the runner the serving app's lifespan opened.

    The dashboard holds on to the runner it reads from, so one is built per runner (once per
    process in production; again when a test starts the app a second time). Settings are
    checked here, at construction, not at the first request.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        from jobrunner.dashboard import create_app

        if options.get("csrf_secret") is None:
            # One key for every dashboard this object builds: tokens survive a rebuild.
            options["csrf_secret"] = secrets.token_bytes(32)
        self._options = options
        self._create_app = create_app
        create_app(runner=None, **options)  # validates every option now
        self._built: tuple[JobRunner, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        runner = _runner_in(scope)
        if runner is None:
            runner = await JobRunnerFactory.get_instance()
        built = self._built
        if built is None or built[0] is not runner:
            built = (runner, self._create_app(runner=runner, **self._options))
            self._built = built
        await built[1](scope, receive, send)


def dashboard_app(
    *,
    auth: Callable[[Request], Any] | None,
    tenant: Any = None,
    read_only: bool | Callable[[Request, Any], Any] = False,
    title: str = "jobrunner",
    refresh_seconds: float = 5.0,
    csrf_secret: bytes | str | None = None,
    secure_cookies: bool | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> ASGIApp:
    """The dashboard as an ASGI app to mount in Starlette: ``Mount("/admin/jobs", app=...)``.

    It reads from the runner :func:`jobrunner_lifespan` opened (else the factory's).
    ``auth(request)`` is the host's check, run on every request: return the user (anything
    but ``None``/``False``), ``None`` for 401, or raise ``PermissionError`` for 403. The other
    arguments are those of :func:`jobrunner.dashboard.create_app` (``tenant`` may be a
    callable ``(request, user) -> tenant | ALL_TENANTS``), except that ``allowed_hosts``
    defaults to every host when there is an ``auth`` hook: the dashboard is then one more
    page of the host app, which decides what hosts it serves (e.g. with Starlette's
    ``TrustedHostMiddleware``); without ``auth`` it keeps the dashboard's own default
    (localhost and the server's address).

    Raises:
        InvalidArgumentError: an argument is malformed (checked now, not at the first request).
    """
    if auth is not None and not callable(auth):
        raise InvalidArgumentError("auth must be a callable taking the request, or None")
    return _LifespanDashboard(
        {
            "auth": auth,
            "tenant": tenant,
            "read_only": read_only,
            "title": title,
            "refresh_seconds": refresh_seconds,
            "csrf_secret": csrf_secret,
            "secure_cookies": secure_cookies,
            "allowed_hosts": _hosts(allowed_hosts, guarded=auth is not None),
        }
    )


def _hosts(allowed_hosts: Iterable[str] | None, *, guarded: bool) -> list[str]:
    if allowed_hosts is None:
        return ["*"] if guarded else []
    if isinstance(allowed_hosts, str):
        return [allowed_hosts]
    if not isinstance(allowed_hosts, Iterable):
        raise InvalidArgumentError("allowed_hosts must be a list of host names")
    return list(allowed_hosts)


def _principal_in_scope(request: Request) -> Any:
    return request.scope.get(_PRINCIPAL_KEY)


class _ForwardToDashboard(Response):
    """A response that lets the dashboard app answer the request itself."""

    def __init__(self, dashboard: ASGIApp, body: bytes, sub_path: str, principal: Any) -> None:
        super().__init__(status_code=200)
        self._dashboard = dashboard
        self._body = body
        self._sub_path = sub_path
        self._principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope["path"])
        # What the route matched before the dashboard's own path is where it is mounted:
        # the app's root_path and any router prefix included.
        mount = path[: len(path) - len(self._sub_path)] if self._sub_path else path
        inner = dict(scope)
        inner["root_path"] = mount.rstrip("/")
        inner[_PRINCIPAL_KEY] = self._principal
        replayed = False

        async def receive_body() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": self._body, "more_body": False}
            return await receive()

        await self._dashboard(inner, receive_body, send)


def dashboard_router(
    *,
    auth: Callable[..., Any] | None,
    tenant: Any = None,
    read_only: bool | Callable[[Request, Any], Any] = False,
    title: str = "jobrunner",
    refresh_seconds: float = 5.0,
    csrf_secret: bytes | str | None = None,
    secure_cookies: bool | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> APIRouter:
    """The dashboard as a FastAPI router guarded by a dependency of the host app.

    ``app.include_router(dashboard_router(auth=current_admin), prefix="/admin/jobs")``.
    ``auth`` is an ordinary FastAPI dependency (sub-dependencies, security schemes and
    ``HTTPException`` work as in any route); every dashboard request (pages, JSON, actions,
    assets) resolves it first. What it returns is the principal: ``None``/``False`` answers
    401, and ``tenant``/``read_only`` callables receive it as ``(request, principal)``.
    ``auth=None`` leaves the dashboard open (protect it otherwise!). The routes are left out
    of the OpenAPI schema. ``allowed_hosts`` defaults as in :func:`dashboard_app`.

    Raises:
        InvalidArgumentError: an argument is malformed.
    """
    from fastapi import APIRouter, Depends

    if auth is not None and not callable(auth):
        raise InvalidArgumentError("auth must be a FastAPI dependency (a callable), or None")
    dashboard = dashboard_app(
        auth=_principal_in_scope,
        tenant=tenant,
        read_only=read_only,
        title=title,
        refresh_seconds=refresh_seconds,
        csrf_secret=csrf_secret,
        secure_cookies=secure_cookies,
        allowed_hosts=_hosts(allowed_hosts, guarded=auth is not None),
    )

    def open_access() -> bool:
        return True

    async def endpoint(request: Request, principal: Any) -> Response:
        body = await request.body()
        sub_path = str(request.path_params.get("path", ""))
        return _ForwardToDashboard(dashboard, body, sub_path, principal)

    # Real annotation objects, not strings: FastAPI resolves string annotations in this
    # module's globals, where Depends(auth) could not be expressed.
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
            ),
            inspect.Parameter(
                "principal",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=Depends(auth if auth is not None else open_access),
                annotation=Any,
            ),
        ],
        return_annotation=Response,
    )
    router = APIRouter(include_in_schema=False)
    methods = ["GET", "POST"]
    router.add_api_route("", endpoint, methods=methods, response_model=None)
    router.add_api_route("/{path:path}", endpoint, methods=methods, response_model=None)
    return router


def mount_dashboard(
    app: Any, path: str, *, auth: Callable[..., Any] | None, **options: Any
) -> None:
    """Mount the dashboard at ``path`` of a FastAPI or Starlette app, behind ``auth``.

    On FastAPI, ``auth`` is a dependency (see :func:`dashboard_router`); on Starlette, a
    callable taking the request (see :func:`dashboard_app`). A function taking one parameter
    annotated ``request: Request`` is both. ``options`` are :func:`dashboard_app`'s.

    Raises:
        InvalidArgumentError: ``path`` is not like ``/admin/jobs``, or an option is malformed.
    """
    if not isinstance(path, str) or not path.startswith("/") or path.endswith("/"):
        raise InvalidArgumentError(
            f"path must start with '/' and not end with one, like '/admin/jobs'; got {path!r}"
        )
    if hasattr(app, "include_router"):
        app.include_router(dashboard_router(auth=auth, **options), prefix=path)
    elif hasattr(app, "mount"):
        app.mount(path, dashboard_app(auth=auth, **options))
    else:
        raise InvalidArgumentError("app must be a FastAPI or Starlette application")
