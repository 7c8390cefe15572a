"""A worker process with settings the CLI does not expose (poll and probe intervals).

``python -m chaos.worker --lease 3 --poll 2 --probe 2``; SIGTERM stops it gracefully like
``jobrunner-worker``. The scenarios that only need the CLI's options run the real CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import chaos.app  # noqa: F401 - registers the handlers
from jobrunner.backends.postgres import PostgresJobRunner


async def _main(args: argparse.Namespace) -> int:
    runner = PostgresJobRunner(
        os.environ["JOBRUNNER_DATABASE_URL"], schema=os.environ["JOBRUNNER_SCHEMA"], pool_size=6
    )
    await runner.start()
    worker = runner.create_worker(
        concurrency=args.concurrency,
        lease_seconds=args.lease,
        poll_interval=args.poll,
        listen_probe_interval=args.probe,
        shutdown_grace=args.grace,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(worker.stop()))
    try:
        await worker.run()
    finally:
        await runner.close()
    return 0


def main() -> int:
    """Parse options and run the worker until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--probe", type=float, default=15.0)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
