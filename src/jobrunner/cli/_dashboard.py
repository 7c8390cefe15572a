"""``jobrunner dashboard``: serve the monitoring dashboard with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from jobrunner._db._database import Database
from jobrunner._errors import ConfigurationError, InvalidArgumentError, UnavailableError
from jobrunner._factory import JobRunnerFactory
from jobrunner.cli._common import (
    add_database_options,
    count_option,
    seconds_option,
    settings_from,
    text_option,
    uuid_option,
)

logger = logging.getLogger("jobrunner.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser(
        "dashboard", help="serve the monitoring dashboard (needs the 'dashboard' extra)"
    )
    parser.add_argument(
        "--host",
        type=text_option("--host", max_length=255),
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=count_option("--port", maximum=65535),
        default=8080,
        help="port (default 8080)",
    )
    parser.add_argument(
        "--tenant",
        type=uuid_option("tenant"),
        help="show only this tenant (default: every tenant)",
    )
    parser.add_argument("--read-only", action="store_true", help="no cancel/retry/clear actions")
    parser.add_argument(
        "--refresh",
        type=seconds_option("--refresh", maximum=3600),
        default=5.0,
        help="live refresh, seconds (0.1 to 3600)",
    )
    parser.add_argument(
        "--root-path",
        type=text_option("--root-path", max_length=500),
        default="",
        help="URL prefix when behind a proxy",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a Host header to answer besides localhost and the bound address (repeat; "
        "host or host:port; '*' allows any; default: JOBRUNNER_DASHBOARD_ALLOWED_HOSTS, "
        "comma-separated); other hosts get 400 (DNS rebinding)",
    )
    add_database_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the app over a runner from the environment and serve it until interrupted."""
    try:
        import uvicorn

        from jobrunner.dashboard import create_app
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"the dashboard needs the 'dashboard' extra: pip install 'jobrunner-pg[dashboard]' "
            f"({exc.name} is missing)"
        ) from exc
    if not 0 < args.port < 65536:
        raise InvalidArgumentError("--port must be between 1 and 65535")
    # Never migrate from the dashboard: a mistyped --schema must fail, not create a schema.
    settings = settings_from(args, auto_migrate="check")
    allowed_hosts = _allowed_hosts(args, settings.extra)
    if settings.runner_type != "memory":
        _check_schema(settings.require_database_url(), settings.schema)

    async def build_runner() -> object:
        # Built inside uvicorn's event loop, on the first request.
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
        allowed_hosts=allowed_hosts,
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


def _allowed_hosts(args: argparse.Namespace, env: dict[str, str]) -> list[str]:
    """``--allowed-host`` (else the environment's list) plus the bound name itself."""
    hosts = list(args.allowed_host) or [
        h.strip() for h in env.get("JOBRUNNER_DASHBOARD_ALLOWED_HOSTS", "").split(",") if h.strip()
    ]
    if args.host not in ("0.0.0.0", "::", ""):  # a wildcard bind is no name a browser sends
        hosts.append(args.host)
    return hosts


def _check_schema(dsn: str, schema: str) -> None:
    """Fail now (exit code 2) when the schema is missing or behind, not on every request.

    An unreachable database is only logged: the dashboard may start before it, and each
    request reports the outage until it is back.
    """
    try:
        asyncio.run(Database(dsn, schema=schema).check_migrated())
    except UnavailableError as exc:
        logger.warning("cannot check the schema now: %s", exc)
