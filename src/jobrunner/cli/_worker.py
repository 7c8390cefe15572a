"""``jobrunner worker`` / ``jobrunner-worker``: run a worker until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from jobrunner._errors import ConfigurationError
from jobrunner._execution import abandoned_handlers
from jobrunner._factory import JobRunnerFactory
from jobrunner._limits import MAX_LEASE_SECONDS, MAX_WORKER_COUNT, MAX_WORKER_INTERVAL_SECONDS
from jobrunner._process import hard_exit
from jobrunner._queue._settings import PREFETCH_HORIZON, WorkerSettings
from jobrunner.cli._common import (
    add_database_options,
    count_option,
    import_apps,
    queues_option,
    seconds_option,
    settings_from,
    text_option,
)

logger = logging.getLogger("jobrunner.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    defaults = WorkerSettings()  # the help states the code's defaults, never a copy
    parser = sub.add_parser("worker", help="run a worker for the registered handlers")
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        required=True,
        help="module(s) that register handlers; repeat or comma-separate",
    )
    parser.add_argument(
        "--concurrency",
        type=count_option("--concurrency", maximum=MAX_WORKER_COUNT),
        default=None,
        help=f"handlers run at once (1 to {MAX_WORKER_COUNT})",
    )
    parser.add_argument(
        "--queues",
        type=queues_option,
        default=None,
        help="comma-separated queues (default: the registered handlers' queues and 'default')",
    )
    parser.add_argument(
        "--lease",
        type=seconds_option("--lease", maximum=MAX_LEASE_SECONDS),
        default=None,
        help=f"lease seconds (default {defaults.lease_seconds:g}, at most {MAX_LEASE_SECONDS:.0f})",
    )
    parser.add_argument(
        "--grace",
        type=seconds_option("--grace", maximum=MAX_WORKER_INTERVAL_SECONDS, allow_zero=True),
        default=None,
        help=f"seconds running jobs get on shutdown (default {defaults.shutdown_grace:g}, "
        f"at most {MAX_WORKER_INTERVAL_SECONDS:.0f})",
    )
    _add_tuning_options(parser, defaults)
    parser.add_argument(
        "--no-scheduler",
        action="store_true",
        help="do not fire recurring schedules in this worker (PostgreSQL)",
    )
    parser.add_argument(
        "--no-postgres-queue",
        action="store_true",
        help="Temporal: do not also run jobs written to the PostgreSQL queue while producers "
        "could not reach Temporal (the fallback)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: one JSON object per line with the record's extra fields",
    )
    parser.add_argument(
        "--metrics-port",
        type=count_option("--metrics-port", minimum=0, maximum=65_535),
        default=None,
        help="serve Prometheus metrics on this port (needs the prometheus extra; 0: any free)",
    )
    parser.add_argument(
        "--metrics-host",
        type=text_option("--metrics-host", max_length=255),
        default="127.0.0.1",
        help="address the metrics endpoint listens on (default 127.0.0.1)",
    )
    add_database_options(parser)
    parser.set_defaults(handler=run)


def _add_tuning_options(parser: argparse.ArgumentParser, defaults: WorkerSettings) -> None:
    """The worker settings docs/performance.md and docs/reference/configuration.md name, each
    with the bounds of ``WorkerSettings.build`` (a bad value exits with code 2 at parse time)."""
    count, seconds, most = MAX_WORKER_COUNT, MAX_WORKER_INTERVAL_SECONDS, "at most"
    group = parser.add_argument_group("tuning (the defaults suit most workers)")
    group.add_argument(
        "--claim-batch",
        metavar="N",
        type=count_option("--claim-batch", maximum=count),
        default=None,
        help=f"most jobs claimed per statement (default: the free slots plus the prefetch; "
        f"1 to {count})",
    )
    group.add_argument(
        "--prefetch",
        metavar="N",
        type=count_option("--prefetch", minimum=0, maximum=count),
        default=None,
        help=f"most claimed jobs held waiting for a free slot (default {defaults.prefetch}, "
        f"fewer if that is more than {PREFETCH_HORIZON * 1000:g} ms of work; 0: claim only "
        f"for free slots)",
    )
    group.add_argument(
        "--flush-interval",
        metavar="SECONDS",
        type=seconds_option("--flush-interval", maximum=seconds, allow_zero=True),
        default=None,
        help=f"seconds an outcome waits to be written with others (default "
        f"{defaults.flush_interval:g}, {most} {seconds:.0f})",
    )
    group.add_argument(
        "--flush-max",
        metavar="N",
        type=count_option("--flush-max", maximum=count),
        default=None,
        help=f"outcomes written per statement at most (default {defaults.flush_max}, 1 to {count})",
    )
    group.add_argument(
        "--sync-threads",
        metavar="N",
        type=count_option("--sync-threads", maximum=count),
        default=None,
        help=f"threads for plain def handlers (default: --concurrency; 1 to {count})",
    )
    group.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        type=seconds_option("--poll-interval", maximum=seconds),
        default=None,
        help=f"safety-net poll when no notification arrives (default "
        f"{defaults.poll_interval:g}, {most} {seconds:.0f})",
    )
    group.add_argument(
        "--heartbeat-interval",
        metavar="SECONDS",
        type=seconds_option("--heartbeat-interval", maximum=seconds),
        default=None,
        help="seconds between heartbeats (default: a third of --lease, and shorter than it; "
        "on Temporal the activity heartbeat, 1 s unless set)",
    )
    group.add_argument(
        "--rescue-interval",
        metavar="SECONDS",
        type=seconds_option("--rescue-interval", maximum=seconds),
        default=None,
        help=f"seconds between scans for expired leases (default: a sixth of --lease, "
        f"{most} {seconds:.0f})",
    )
    group.add_argument(
        "--listen-probe-interval",
        metavar="SECONDS",
        type=seconds_option("--listen-probe-interval", maximum=seconds),
        default=None,
        help=f"silence after which the LISTEN connection is probed (default "
        f"{defaults.listen_probe_interval:g}, {most} {seconds:.0f})",
    )
    group.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop (about an eighth less CPU per job, docs/performance.md), "
        "asyncio, or auto (the default): uvloop for the PostgreSQL queue when it is "
        "installed, asyncio otherwise",
    )
    group.add_argument(
        "--fair",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="set WorkerSettings.fair: claim round-robin between tenants (docs/fairness.md); "
        "without either flag the library's default applies",
    )


#: ``jobrunner worker`` flags passed to ``create_worker`` as the setting of the same meaning.
_TUNING = {
    "claim_batch": "claim_batch",
    "prefetch": "prefetch",
    "flush_interval": "flush_interval",
    "flush_max": "flush_max",
    "sync_threads": "sync_threads",
    "poll_interval": "poll_interval",
    "heartbeat_interval": "heartbeat_interval",
    "rescue_interval": "rescue_interval",
    "listen_probe_interval": "listen_probe_interval",
    "fair": "fair",
    "lease": "lease_seconds",
    "grace": "shutdown_grace",
}


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The worker settings the command line sets (a flag left out keeps the default)."""
    options: dict[str, Any] = {
        setting: getattr(args, flag)
        for flag, setting in _TUNING.items()
        if getattr(args, flag, None) is not None
    }
    if args.no_scheduler:
        options["run_scheduler"] = False
    return options


def run(args: argparse.Namespace) -> int:
    """Build the runner from the environment and run its worker."""
    runner_type = settings_from(args).runner_type
    if runner_type == "postgres":
        # Settings that contradict each other (--heartbeat-interval not below --lease) are
        # refused before anything connects (exit code 2, the message on stderr).
        WorkerSettings.build(concurrency=args.concurrency, **worker_options(args))
    import_apps(args.app)
    workers: list[object] = []
    with asyncio.Runner(loop_factory=loop_factory(args.loop, runner_type)) as r:
        code = r.run(_serve(args, workers))
    for worker in workers:
        # A worker may have to end the process itself after a clean shutdown: Temporal's SDK
        # runs native threads (TemporalWorker.exit_process, never returns); a PostgreSQL
        # worker's stuck sync handler thread would block interpreter exit (returns if none).
        exit_process = getattr(worker, "exit_process", None)
        if callable(exit_process):
            exit_process(code)
    return code


def loop_factory(choice: str, runner_type: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``--loop`` asks for (``None``: asyncio's own).

    ``auto`` takes uvloop for the PostgreSQL queue when it is installed (a dependency on
    CPython outside Windows): the worker's CPU per job is largely the event loop's (a task,
    a timer and socket waits per attempt). Temporal's SDK runs its own workflow loop and is
    tested on asyncio's, so a Temporal worker keeps that unless ``uvloop`` is asked for.

    Raises:
        ConfigurationError: ``uvloop`` was asked for and is not installed.
    """
    if choice == "asyncio" or (choice == "auto" and runner_type != "postgres"):
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "--loop uvloop: the uvloop package is not installed (pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(args: argparse.Namespace, workers: list[object]) -> int:
    settings = settings_from(args)
    runner = await JobRunnerFactory.create(settings)
    options = worker_options(args)
    if args.no_postgres_queue:
        if runner.runner_type == "temporal":
            options["postgres_queue"] = False
        else:
            # This worker fell back to PostgreSQL itself (or was never Temporal): running the
            # PostgreSQL queue is all it does.
            logger.warning("--no-postgres-queue ignored: this worker runs the PostgreSQL queue")
    queues = args.queues or None
    worker = runner.create_worker(concurrency=args.concurrency, queues=queues, **options)
    if args.metrics_port is not None:
        _serve_metrics(runner, args.metrics_host, args.metrics_port)
    workers.append(worker)
    loop = asyncio.get_running_loop()
    signals_seen = 0
    stop_tasks: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.info(
                "received %s: finishing running jobs (send again to force)",
                signal.Signals(signum).name,
            )
            stop_tasks.append(loop.create_task(worker.stop()))
        else:
            logger.warning(
                "received %s again: stopping now, re-queueing running jobs",
                signal.Signals(signum).name,
            )
            stop_tasks.append(loop.create_task(worker.stop(grace=0)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.close()
    stuck: list[str] = list(getattr(worker, "stuck_tasks", None) or [])
    if stuck:
        # asyncio.run would wait for them forever while it cancels the remaining tasks.
        logger.warning("exiting without waiting for: %s", ", ".join(stuck))
        hard_exit(0)
    if abandoned_handlers():
        # A handler that ignored cancellation (its outcome is recorded) would make
        # asyncio.run wait for it forever while it cancels the remaining tasks.
        logger.warning(
            "exiting without waiting for %d handler(s) that ignored cancellation",
            abandoned_handlers(),
        )
        hard_exit(0)
    return 0


def _serve_metrics(runner: object, host: str, port: int) -> None:
    """Prometheus metrics of this worker (its counters) and the database (the live-job
    gauges) over HTTP, from a thread of prometheus_client's own."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server

        from jobrunner.prometheus import JobRunnerCollector
    except ImportError as exc:
        raise ConfigurationError(
            "--metrics-port needs prometheus-client: install jobrunner's prometheus extra"
        ) from exc
    registry = CollectorRegistry()
    registry.register(JobRunnerCollector(runner))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    logger.info("metrics at http://%s:%d/metrics", host, server.server_port)
