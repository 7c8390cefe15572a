"""``jobrunner dashboard``: serve the monitoring dashboard with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator

from jobrunner.cli._common import add_database_options, settings_from

logger = logging.getLogger("jobrunner.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser(
        "dashboard", help="serve the monitoring dashboard (needs the 'dashboard' extra)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--tenant", help="show only this tenant (default: every tenant)")
    parser.add_argument("--read-only", action="store_true", help="no cancel/retry/clear actions")
    parser.add_argument("--refresh", type=float, default=5.0, help="live refresh, seconds")
    parser.add_argument("--root-path", default="", help="URL prefix when behind a proxy")
    add_database_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the app over a runner from the environment and serve it until interrupted."""
    from jobrunner._errors import ConfigurationError, InvalidArgumentError

    try:
        import uvicorn

        from jobrunner.dashboard import create_app
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"the dashboard needs the 'dashboard' extra: pip install 'jobrunner[dashboard]' "
            f"({exc.name} is missing)"
        ) from exc
    if not 0 < args.port < 65536:
        raise InvalidArgumentError("--port must be between 1 and 65535")
    settings = settings_from(args)

    async def build_runner() -> object:
        # Built inside uvicorn's event loop, on the first request.
        from jobrunner._factory import JobRunnerFactory

        return await JobRunnerFactory.create(settings)

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "serving the dashboard on %s without authentication: anyone who can reach it can "
            "cancel and retry jobs (use --read-only, or mount create_app(auth=...) in your app)",
            args.host,
        )
    app = create_app(
        build_runner,  # type: ignore[arg-type]
        tenant=args.tenant,
        read_only=args.read_only,
        refresh_seconds=args.refresh,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        yield
        # Close the runner built for the first request (if any) when uvicorn stops.
        runner = app.state.dashboard._runner
        if runner is not None:
            await runner.close()

    app.router.lifespan_context = lifespan
    print(f"jobrunner dashboard on http://{args.host}:{args.port}{args.root_path}/")
    uvicorn.run(app, host=args.host, port=args.port, root_path=args.root_path, log_level="warning")
    return 0
